// Package driver implements Docker's volume plugin protocol for securevol:
// each volume is an encrypted backing folder (crypto) under
// <state-dir>/volumes/<ID>, shown decrypted by a FUSE mount (cryptfs) under
// the mount root while at least one container uses it, with its metadata
// and reference counts in a bbolt database (store).
//
// Driver is the collection: the protocol's entry points, the master keys
// and start-up. Each volume is a vol, with its own lock, record and live
// mount.
package driver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

// Config configures a Driver.
type Config struct {
	// StateDir holds the backing folders, in StateDir/volumes/<volume ID>.
	StateDir string
	// MountRoot is where volumes are mounted, at MountRoot/<name>. For a
	// managed plugin it must lie under the plugin's propagatedMount.
	MountRoot string
	// Store is the open metadata database.
	Store *store.Store
	// Cluster, if set, shares the volumes with other nodes (see
	// cluster.go): Store is then kept in etcd, and StateDir is on shared
	// storage.
	Cluster *cluster.Node
	// Keys are master key sources. Keys[0] wraps new volumes; opening a
	// volume tries each in turn (more than one only during a key rotation).
	Keys []crypto.KeySource
	// KeyKind names the key source for Status ("key file", "passphrase",
	// "key command"). Never the key itself.
	KeyKind string
	// Mounter mounts a volume; nil means FUSEMounter(Metrics).
	Mounter Mounter
	// Metrics, if set, hears of each volume's mounts (through the default
	// Mounter) and removal.
	Metrics Metrics
	// DefaultSize is the size limit of volumes created without a size
	// option, in bytes; 0 is none.
	DefaultSize int64
	// Log receives the driver's log; nil discards.
	Log *logrus.Entry
	// LockWait bounds how long a request waits for another request on the
	// same volume; 0 means 50 s (under the engine's 60 s timeout).
	LockWait time.Duration
	// UnmountWait bounds how long an unmount waits for its FUSE server to
	// end; 0 means 2 s. See vol.detach.
	UnmountWait time.Duration
	// RemoveGrace is how long a removed volume's key is kept, so that
	// Undelete can bring it back; 0 destroys it at once (crypto-shredding,
	// irreversible). See Driver.Remove.
	RemoveGrace time.Duration
}

// Driver is the volume driver. Create it with New, then call Start before
// serving requests, and Close on shutdown.
type Driver struct {
	cfg    Config
	volDir string
	log    *logrus.Entry

	// keyMu guards keys. Creating or opening a volume holds it for reading;
	// a key rotation holds it for writing, so no volume is created under the
	// old key after the rotation has walked past it.
	keyMu sync.RWMutex
	keys  []crypto.KeySource

	mu sync.Mutex
	// vols holds the volumes that a request is using or waiting for, that
	// are mounted, or that start-up found a problem with (see tidy).
	vols map[string]*vol
	// ops counts the requests in flight that change state, so Close can
	// wait for them; once closing is set (under mu) no new one starts.
	ops     sync.WaitGroup
	closing bool
	// wrongKey is set at start when the master key opens none of the
	// volumes tried: Create is refused, so no volume is made under it.
	wrongKey atomic.Bool

	// refs are this node's mount references per volume in cluster mode
	// (guarded by mu; see cluster.go).
	refs map[string]map[string]int
	// holds are the folders mounted on a single host, by volume, for
	// writing or through views (guarded by mu; see localHold).
	holds map[string]*holdUse

	// purging holds the IDs of the removed volumes being purged (guarded
	// by mu); stop ends purgeLoop, closed by Close.
	purging map[string]bool
	stop    chan struct{}

	// fusectlMu makes one caller at a time mount fusectl (see fuseConnDir).
	fusectlMu sync.Mutex

	// removeAll deletes a backing folder's files: os.RemoveAll, replaced
	// by tests, since it is the one operation whose time grows with the
	// volume's size.
	removeAll func(string) error
}

// closeWait bounds how long Close waits for requests in flight (the HTTP
// server has already waited a few seconds; the engine kills the plugin 10 s
// after SIGTERM).
const closeWait = 2 * time.Second

// begin registers a request that changes state; the caller must call done.
func (d *Driver) begin() (done func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, errClosing
	}
	d.ops.Add(1)
	return d.ops.Done, nil
}

var _ volume.Driver = (*Driver)(nil)

// New checks cfg and returns a Driver. It touches nothing on disk.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" || cfg.MountRoot == "" || cfg.Store == nil {
		return nil, errors.New("driver: StateDir, MountRoot and Store are required")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("driver: no master key source")
	}
	if cfg.Mounter == nil {
		cfg.Mounter = FUSEMounter(cfg.Metrics)
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = 50 * time.Second
	}
	if cfg.UnmountWait <= 0 {
		cfg.UnmountWait = 2 * time.Second
	}
	if cfg.RemoveGrace < 0 {
		return nil, errors.New("driver: RemoveGrace is negative")
	}
	if cfg.DefaultSize != 0 && cfg.DefaultSize < MinSize {
		return nil, fmt.Errorf("driver: DefaultSize below %d bytes", MinSize)
	}
	if cfg.KeyKind == "" {
		cfg.KeyKind = "key file"
	}
	return &Driver{
		cfg:       cfg,
		volDir:    filepath.Join(cfg.StateDir, "volumes"),
		log:       cfg.Log,
		keys:      append([]crypto.KeySource(nil), cfg.Keys...),
		vols:      map[string]*vol{},
		purging:   map[string]bool{},
		refs:      map[string]map[string]int{},
		holds:     map[string]*holdUse{},
		stop:      make(chan struct{}),
		removeAll: os.RemoveAll,
	}, nil
}

func (d *Driver) backing(id string) string      { return filepath.Join(d.volDir, id) }
func (d *Driver) mountpoint(name string) string { return filepath.Join(d.cfg.MountRoot, name) }

// live is name's live mount, or nil if it is not mounted.
func (d *Driver) live(name string) *liveMount {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v := d.vols[name]; v != nil {
		return v.mount
	}
	return nil
}

// setTrouble records (or with "" clears) a problem of name that Status
// shows and that keeps start-up from mounting it.
func (d *Driver) setTrouble(name, problem string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vols[name]
	if v == nil {
		if problem == "" {
			return
		}
		v = d.newVol(name)
	}
	v.trouble = problem
	d.tidy(v)
}

func (d *Driver) getTrouble(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v := d.vols[name]; v != nil {
		return v.trouble
	}
	return ""
}

// lookup returns name's record, with an error that says "no such volume"
// for unknown names: the engine reads that from Get as "not mine".
func (d *Driver) lookup(name string) (*store.Volume, error) {
	v, err := d.cfg.Store.Get(name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, noSuchVolume(name)
	case errors.Is(err, store.ErrBadRecord):
		return nil, fmt.Errorf("%w (it is moved aside, and the volume recovered from its folder, when the plugin next starts)", err)
	case err != nil:
		return nil, err
	}
	d.withRefs(v)
	return v, nil
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// sameButSize reports whether a and b differ at most in their size limit.
func sameButSize(a, b store.Options) bool {
	a.Size, b.Size = 0, 0
	return a == b
}

// Create makes a new encrypted volume. Re-creating a volume with the same
// options is a no-op; with different ones it is an error, because the
// engine would otherwise let the user believe the new options took effect.
func (d *Driver) Create(r *volume.CreateRequest) error {
	if err := checkName(r.Name); err != nil {
		return err
	}
	if src, ok := r.Options[OptReadOnlyOf]; ok {
		if len(r.Options) > 1 {
			return classed(ErrInvalid, "create %s: %s takes no other option (a view shows its source as it is)", r.Name, OptReadOnlyOf)
		}
		v, unlock, err := d.lockName(r.Name)
		if err != nil {
			return err
		}
		defer unlock()
		if err := v.createView(strings.TrimSpace(src)); err != nil {
			return fmt.Errorf("create %s: %w", r.Name, err)
		}
		return nil
	}
	opts, err := ParseOptions(r.Options)
	if err != nil {
		return classed(ErrInvalid, "create %s: %w", r.Name, err)
	}
	_, sized := r.Options["size"]
	if !sized {
		opts.Size = d.cfg.DefaultSize
	}
	v, unlock, err := d.lockName(r.Name)
	if err != nil {
		return err
	}
	defer unlock()

	old, err := d.cfg.Store.Get(r.Name)
	switch {
	case err == nil && old.View != nil:
		return classed(ErrConflict, "create %s: a read-only view of %s exists by that name; remove it first", r.Name, old.View.Of)
	case err == nil && old.Removing:
		return classed(ErrConflict, "create %s: the volume is being removed (its key is already destroyed); finish with: docker volume rm %s", r.Name, r.Name)
	case err == nil && old.Options == opts:
		return nil
	case err == nil && !sized && sameButSize(old.Options, opts):
		// The default size may have changed since: the volume keeps
		// the limit it was made with.
		return nil
	case err == nil:
		return classed(ErrConflict, "create %s: volume already exists with different options (%s, requested %s); remove it first or repeat the original options", r.Name, formatOptions(old.Options), formatOptions(opts))
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("create %s: %w", r.Name, err)
	}

	if d.wrongKey.Load() {
		return classed(ErrUnavailable, "create %s: the daemon's master key opens none of the existing volumes (wrong passphrase, key file or key command?); new volumes are refused so none is made under it: fix the key source and restart securevol", r.Name)
	}
	start := time.Now()
	if err := v.create(opts); err != nil {
		return fmt.Errorf("create %s: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "id": v.rec.ID, "options": formatOptions(opts), "took": time.Since(start).Round(time.Millisecond)}).Info("created volume")
	return nil
}

// applyOwner gives the new backing folder dir (the volume's root
// directory) its owner and mode, through its descriptor.
func applyOwner(dir string, o store.Options) error {
	return backing.WithRoot(dir, func(root *backing.Dir) error {
		if err := unix.Fchown(root.Fd(), int(o.UID), int(o.GID)); err != nil {
			return err
		}
		return unix.Fchmod(root.Fd(), o.Mode&0o7777)
	})
}

// discard shreds and deletes the backing folder dir of the volume name
// (whose record's DirID is dirID, "" if unknown): key first, so the data
// is unreadable from that moment even if deleting the files is cut short.
// A folder that is another volume's (see notAnothers) is refused, its key
// kept.
func (d *Driver) discard(dir, name, dirID string) error {
	// A key rotation re-writes headers; it must not write one back into a
	// folder whose key is being destroyed. Only the (quick) shredding holds
	// keyMu: deleting a huge folder under it would stall a waiting rotation
	// and, behind it, every Create and Mount of every volume.
	unlock, err := d.rlockKeys()
	if err != nil {
		return err
	}
	err = d.notAnothers(dir, name, dirID)
	if err == nil {
		err = destroyKey(dir)
	}
	unlock()
	if err != nil {
		return err
	}
	if err := d.removeAll(dir); err != nil {
		return fmt.Errorf("key destroyed (the data is unreadable) but deleting %s failed: %w", dir, err)
	}
	return nil
}

// mayDiscard is notAnothers for a caller that holds no keyMu: a removal
// asks it before marking the volume, so a refusal leaves the volume as
// it was.
func (d *Driver) mayDiscard(dir, name, dirID string) error {
	unlock, err := d.rlockKeys()
	if err != nil {
		return err
	}
	defer unlock()
	return d.notAnothers(dir, name, dirID)
}

// notAnothers refuses the folder dir if its header opens under the
// daemon's key and belongs to another volume than name (whose record's
// DirID is dirID): another name, or another directory ID. It is that
// volume's (folders swapped on disk, a backup restored into the wrong
// folder), a mistake that swapping back undoes, unless its key is
// destroyed. A header that does not open holds no key of ours. keyMu must
// be held.
func (d *Driver) notAnothers(dir, name, dirID string) error {
	h, err := backing.ReadHeaderAt(dir)
	if err != nil || !h.Authenticated() || h.Name == name && (dirID == "" || h.ID == dirID) {
		return nil
	}
	if _, _, err := d.open(h); err != nil {
		return nil
	}
	return fmt.Errorf("%w: %s holds the volume %q with directory ID %s, not %q with %s (folders swapped or copied on disk?); its key is not destroyed", errWrongFolder, dir, h.Name, h.ID, name, dirID)
}

// destroyKey shreds the header of the folder dir. A folder that is gone,
// or is no directory (a planted symlink), holds no key of ours: only the
// name is deleted after this.
func destroyKey(dir string) error {
	err := backing.WithRoot(dir, backing.DestroyKey)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, backing.ErrNotDir) {
		return nil
	}
	return err
}

// readHeader reads the header of the backing folder dir; a missing folder
// counts as one without header.
func readHeader(dir string) (*crypto.Header, error) {
	h, err := backing.ReadHeaderAt(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return h, nil
}

// Remove deletes a volume that no container uses: it marks the record,
// destroys the wrapped key (crypto-shredding), deletes the backing folder,
// then the record. A Remove cut short is finished by a retry or at the
// next start.
//
// With a RemoveGrace, Remove only takes the volume out of sight (see
// vol.hide): the key goes when the grace ends, unless Undelete brings the
// volume back first.
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	v, unlock, err := d.lockVolume(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if n := references(v.rec); n > 0 || d.live(r.Name) != nil {
		return classed(ErrConflict, "remove %s: volume is in use (%d mounts); stop the containers using it first", r.Name, n)
	}
	if v.rec.View != nil {
		if err := v.removeView(); err != nil {
			return fmt.Errorf("remove %s: %w", r.Name, err)
		}
		d.log.WithFields(logrus.Fields{"volume": r.Name, "of": v.rec.View.Of}).Info("removed a read-only view (its source untouched)")
		return nil
	}
	if err := d.cfg.Store.View(func(tx *store.Tx) error { return refuseViewed(tx, r.Name) }); err != nil {
		return fmt.Errorf("remove %s: %w", r.Name, err)
	}
	if d.clustered() {
		// Held through the removal, so no node mounts the volume
		// meanwhile; a node that holds it now refuses it.
		c, err := v.claim(0)
		if err != nil {
			return fmt.Errorf("remove %s: %w", r.Name, err)
		}
		defer c.Release()
	}
	id := v.rec.ID
	if d.cfg.RemoveGrace > 0 && !v.rec.Removing {
		purgeAt, err := v.hide(d.cfg.RemoveGrace)
		if err != nil {
			return fmt.Errorf("remove %s: %w", r.Name, err)
		}
		d.log.WithFields(logrus.Fields{"volume": r.Name, "id": id, "purge_at": purgeAt.Format(time.RFC3339)}).Info("removed volume from sight; its key is kept until the purge time, and undelete brings it back until then")
		return nil
	}
	if err := v.remove(); err != nil {
		return fmt.Errorf("remove %s: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "id": id}).Info("removed volume (key destroyed, folder deleted)")
	return nil
}

// gone forgets the volume name once it is removed (or out of sight for
// its grace period): its empty mountpoint directory, any problem start-up
// found with it, and its metrics.
func (d *Driver) gone(name string) {
	if err := os.Remove(d.mountpoint(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.WithError(err).WithField("volume", name).Warn("could not remove the empty mountpoint")
	}
	d.setTrouble(name, "")
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.Remove(name)
	}
}

// Mount takes a reference for the mount ID r.ID and mounts the volume at
// its first reference. References are counted per call, as Docker's local
// driver counts them: the engine repeats a mount ID (docker cp into a
// running container) and sends as many Unmounts as Mounts. A failed Mount
// leaves nothing mounted and no reference: the engine sends no Unmount
// after it.
func (d *Driver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	v, unlock, err := d.lockVolume(r.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if v.rec.Removing {
		return nil, classed(ErrConflict, "mount %s: the volume is being removed (its key is destroyed); finish with: docker volume rm %s", r.Name, r.Name)
	}
	attached := false
	if d.live(r.Name) == nil {
		start := time.Now()
		if err := v.attach(); err != nil {
			return nil, fmt.Errorf("mount %s: %w", r.Name, err)
		}
		attached = true
		d.log.WithFields(logrus.Fields{"volume": r.Name, "took": time.Since(start).Round(time.Millisecond)}).Info("mounted volume")
	}
	if v.rec.Mounts == nil {
		v.rec.Mounts = map[string]int{}
	}
	v.rec.Mounts[r.ID]++
	if err := v.saveRefs(); err != nil {
		if attached {
			if err2 := v.detach(); err2 != nil {
				d.log.WithError(err2).WithField("volume", r.Name).Error("unmount after failed mount")
			}
		}
		return nil, fmt.Errorf("mount %s: record reference: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "mount_id": r.ID, "references": references(v.rec)}).Debug("mount reference taken")
	return &volume.MountResponse{Mountpoint: d.mountpoint(r.Name)}, nil
}

// Unmount drops one reference of mount ID r.ID and unmounts at the last
// reference of all. The reference is dropped on disk before the unmount, so
// a crash in between cannot resurrect it at the next start.
func (d *Driver) Unmount(r *volume.UnmountRequest) error {
	v, unlock, err := d.lockVolume(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	count := v.rec.Mounts[r.ID]
	if count <= 0 {
		// Nothing to release (e.g. the references were lost with the
		// database and rebuilt without them). Failing would only leave
		// the engine unable to stop the container cleanly.
		d.log.WithFields(logrus.Fields{"volume": r.Name, "mount_id": r.ID}).Warn("unmount for a mount ID that holds no reference; ignored")
		return nil
	}
	if count == 1 {
		delete(v.rec.Mounts, r.ID)
	} else {
		v.rec.Mounts[r.ID] = count - 1
	}
	if err := v.saveRefs(); err != nil {
		return fmt.Errorf("unmount %s: %w", r.Name, err)
	}
	if len(v.rec.Mounts) == 0 {
		if err := v.detach(); err != nil {
			v.rec.Mounts = map[string]int{r.ID: 1}
			if err2 := v.saveRefs(); err2 != nil {
				d.log.WithError(err2).WithField("volume", r.Name).Error("restoring the reference after a failed unmount")
			}
			return err
		}
		d.log.WithField("volume", r.Name).Info("unmounted volume")
	}
	return nil
}

// Path answers the mountpoint while the volume is mounted and "" while it
// is not: unmounted, the directory holds nothing.
func (d *Driver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	if err := checkName(r.Name); err != nil {
		return nil, err
	}
	if _, err := d.lookup(r.Name); err != nil {
		return nil, err
	}
	if lm := d.live(r.Name); lm != nil {
		return &volume.PathResponse{Mountpoint: lm.mountpoint}, nil
	}
	return &volume.PathResponse{}, nil
}

// Get describes one volume. Unknown names are an error, never a volume:
// the engine skips Create when Get answers one.
func (d *Driver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	if err := checkName(r.Name); err != nil {
		return nil, err
	}
	v, err := d.lookup(r.Name)
	if err != nil {
		return nil, err
	}
	out := d.describe(v)
	out.Status = d.status(v)
	return &volume.GetResponse{Volume: out}, nil
}

func (d *Driver) describe(v *store.Volume) *volume.Volume {
	out := &volume.Volume{Name: v.Name, CreatedAt: v.CreatedAt.UTC().Format(time.RFC3339)}
	if lm := d.live(v.Name); lm != nil {
		out.Mountpoint = lm.mountpoint
	}
	return out
}

// List answers every volume from one read transaction, without Status
// (the engine does not show it) and without taking any volume's lock.
func (d *Driver) List() (*volume.ListResponse, error) {
	all, err := d.cfg.Store.List()
	if err != nil {
		return nil, err
	}
	out := &volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(all))}
	for _, v := range all {
		out.Volumes = append(out.Volumes, d.describe(v))
	}
	return out, nil
}

// Capabilities: volumes live on this host, or in cluster mode on every
// node of the cluster, so each node's engine sees the same ones.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	if d.clustered() {
		return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "global"}}
	}
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// Close unmounts every volume without touching reference counts, so the
// next start mounts again what containers still use. New requests are
// refused from now on; those in flight are waited for (up to closeWait), so
// a Mount finishing meanwhile leaves no live mount behind.
func (d *Driver) Close() error {
	d.mu.Lock()
	if !d.closing {
		close(d.stop)
	}
	d.closing = true
	d.mu.Unlock()
	idle := make(chan struct{})
	go func() { d.ops.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(closeWait):
		d.log.Warn("requests still running at shutdown; unmounting anyway")
	}
	d.mu.Lock()
	var mounted []*vol
	for _, v := range d.vols {
		if v.mount != nil {
			mounted = append(mounted, v)
		}
	}
	d.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 32) // each may wait UnmountWait; SIGKILL comes 10 s after SIGTERM
	)
	for _, v := range mounted {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := v.detach(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Mounted is the number of volumes mounted now.
func (d *Driver) Mounted() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, v := range d.vols {
		if v.mount != nil {
			n++
		}
	}
	return n
}
