// Package driver implements Docker's volume plugin protocol for securevol:
// each volume is an encrypted backing folder (crypto) under
// <state-dir>/volumes/<ID>, shown decrypted by a FUSE mount (cryptfs) under
// the mount root while at least one container uses it, with its metadata
// and reference counts in a bbolt database (store).
package driver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
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
	// Log receives the driver's log; nil discards.
	Log *logrus.Entry
	// LockWait bounds how long a request waits for another request on the
	// same volume; 0 means 50 s (under the engine's 60 s timeout).
	LockWait time.Duration
	// UnmountWait bounds how long an unmount waits for its FUSE server to
	// end; 0 means 2 s. See detachVolume.
	UnmountWait time.Duration
}

// Driver is the volume driver. Create it with New, then call Start before
// serving requests, and Close on shutdown.
type Driver struct {
	cfg    Config
	volDir string
	log    *logrus.Entry
	locks  *nameLocks

	// keyMu guards keys. Creating or opening a volume holds it for reading;
	// a key rotation holds it for writing, so no volume is created under the
	// old key after the rotation has walked past it.
	keyMu sync.RWMutex
	keys  []crypto.KeySource

	mu      sync.Mutex
	mounted map[string]*liveMount // by volume name
	trouble map[string]string     // volume name → problem found at start-up
	// ops counts the Create, Remove, Mount and Unmount requests in flight,
	// so Close can wait for them; once closing is set (under mu) no new
	// one starts.
	ops     sync.WaitGroup
	closing bool
	// wrongKey is set at start when the master key opens none of the
	// volumes tried: Create is refused, so no volume is made under it.
	wrongKey atomic.Bool
}

// errClosing refuses requests that arrive while the driver shuts down.
var errClosing = errors.New("the securevol plugin is shutting down; try again when it is back")

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

type liveMount struct {
	m          Mount
	mountpoint string
	leaving    atomic.Bool // set while we unmount it ourselves
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
	if cfg.KeyKind == "" {
		cfg.KeyKind = "key file"
	}
	return &Driver{
		cfg:     cfg,
		volDir:  filepath.Join(cfg.StateDir, "volumes"),
		log:     cfg.Log,
		locks:   newNameLocks(),
		keys:    append([]crypto.KeySource(nil), cfg.Keys...),
		mounted: map[string]*liveMount{},
		trouble: map[string]string{},
	}, nil
}

func (d *Driver) backing(id string) string      { return filepath.Join(d.volDir, id) }
func (d *Driver) mountpoint(name string) string { return filepath.Join(d.cfg.MountRoot, name) }

func (d *Driver) live(name string) *liveMount {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mounted[name]
}

func (d *Driver) setTrouble(name, problem string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if problem == "" {
		delete(d.trouble, name)
	} else {
		d.trouble[name] = problem
	}
}

func (d *Driver) getTrouble(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trouble[name]
}

// lookup returns name's record, with an error that says "no such volume"
// for unknown names: the engine reads that from Get as "not mine".
func (d *Driver) lookup(name string) (*store.Volume, error) {
	v, err := d.cfg.Store.Get(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("volume %s: no such volume", name)
	}
	return v, err
}

// lockVolume validates name, takes the volume's lock and loads its record.
// On success the caller must call unlock.
func (d *Driver) lockVolume(name string) (v *store.Volume, unlock func(), err error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	done, err := d.begin()
	if err != nil {
		return nil, nil, err
	}
	unlockName, err := d.locks.lock(name, d.cfg.LockWait)
	if err != nil {
		done()
		return nil, nil, err
	}
	unlock = func() { unlockName(); done() }
	if v, err = d.lookup(name); err != nil {
		unlock()
		return nil, nil, err
	}
	return v, unlock, nil
}

// rlockKeys takes keyMu for reading, waiting at most LockWait: a key
// rotation holds it while it re-wraps every folder, and a request must not
// outwait the engine's timeout (or hold its volume's lock that long).
func (d *Driver) rlockKeys() (func(), error) {
	deadline := time.Now().Add(d.cfg.LockWait)
	for !d.keyMu.TryRLock() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("a master key rotation has been running for over %v; try again when it is done: %w", d.cfg.LockWait, errBusy)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d.keyMu.RUnlock, nil
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Create makes a new encrypted volume. Re-creating a volume with the same
// options is a no-op; with different ones it is an error, because the
// engine would otherwise let the user believe the new options took effect.
func (d *Driver) Create(r *volume.CreateRequest) error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	opts, err := ParseOptions(r.Options)
	if err != nil {
		return fmt.Errorf("create %s: %w", r.Name, err)
	}
	done, err := d.begin()
	if err != nil {
		return err
	}
	defer done()
	unlock, err := d.locks.lock(r.Name, d.cfg.LockWait)
	if err != nil {
		return err
	}
	defer unlock()

	old, err := d.cfg.Store.Get(r.Name)
	switch {
	case err == nil && old.Removing:
		return fmt.Errorf("create %s: the volume is being removed (its key is already destroyed); finish with: docker volume rm %s", r.Name, r.Name)
	case err == nil && old.Options == opts:
		return nil
	case err == nil:
		return fmt.Errorf("create %s: volume already exists with different options (%s, requested %s); remove it first or repeat the original options", r.Name, formatOptions(old.Options), formatOptions(opts))
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("create %s: %w", r.Name, err)
	}

	if d.wrongKey.Load() {
		return fmt.Errorf("create %s: the daemon's master key opens none of the existing volumes (wrong passphrase, key file or key command?); new volumes are refused so none is made under it: fix the key source and restart securevol", r.Name)
	}
	start := time.Now()
	v, err := d.create(r.Name, opts)
	if err != nil {
		return fmt.Errorf("create %s: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "id": v.ID, "options": formatOptions(opts), "took": time.Since(start).Round(time.Millisecond)}).Info("created volume")
	return nil
}

func (d *Driver) create(name string, opts store.Options) (*store.Volume, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	dir := d.backing(id)
	if err := os.MkdirAll(d.volDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	labels := optionLabels(opts)
	// The backing root's owner and mode are what the FUSE root shows. They
	// are set before the header is written: a create cut short after the
	// header is recovered at the next start, and must come back with them.
	err = applyOwner(dir, opts)
	var hdr *crypto.Header
	if err == nil {
		var unlock func()
		if unlock, err = d.rlockKeys(); err == nil {
			err = backing.WithRoot(dir, func(root *backing.Dir) (err error) {
				hdr, _, err = backing.InitVolume(root, d.keys[0], name, labels)
				return err
			})
			unlock()
		}
	}
	v := &store.Volume{ID: id, Name: name, Options: opts}
	if err == nil {
		v.CreatedAt = hdr.Created
		err = d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Put(v) })
	}
	if err != nil {
		if err2 := d.discard(dir); err2 != nil {
			d.log.WithError(err2).WithField("volume", name).Error("cleaning up after a failed create")
		}
		return nil, err
	}
	return v, nil
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

// removeAll deletes a backing folder's files (a variable for tests: it is
// the one operation whose time grows with the volume's size).
var removeAll = os.RemoveAll

// discard shreds and deletes a backing folder: key first, so the data is
// unreadable from that moment even if deleting the files is cut short.
func (d *Driver) discard(dir string) error {
	// A key rotation re-writes headers; it must not write one back into a
	// folder whose key is being destroyed. Only the (quick) shredding holds
	// keyMu: deleting a huge folder under it would stall a waiting rotation
	// and, behind it, every Create and Mount of every volume.
	unlock, err := d.rlockKeys()
	if err != nil {
		return err
	}
	err = destroyKey(dir)
	unlock()
	if err != nil {
		return err
	}
	if err := removeAll(dir); err != nil {
		return fmt.Errorf("key destroyed (the data is unreadable) but deleting %s failed: %w", dir, err)
	}
	return nil
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
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	v, unlock, err := d.lockVolume(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if n := references(v); n > 0 || d.live(r.Name) != nil {
		return fmt.Errorf("remove %s: volume is in use (%d mounts); stop the containers using it first", r.Name, n)
	}
	if err := d.removeVolume(v); err != nil {
		return fmt.Errorf("remove %s: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "id": v.ID}).Info("removed volume (key destroyed, folder deleted)")
	return nil
}

func (d *Driver) removeVolume(v *store.Volume) error {
	if !v.Removing {
		v.Removing = true
		if err := d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
			return err
		}
	}
	if err := d.discard(d.backing(v.ID)); err != nil {
		return err
	}
	if err := os.Remove(d.mountpoint(v.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.WithError(err).WithField("volume", v.Name).Warn("could not remove the empty mountpoint")
	}
	if err := d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Delete(v.Name) }); err != nil {
		return err
	}
	d.setTrouble(v.Name, "")
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.Remove(v.Name)
	}
	return nil
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
	if v.Removing {
		return nil, fmt.Errorf("mount %s: the volume is being removed (its key is destroyed)", r.Name)
	}
	attached := false
	if d.live(r.Name) == nil {
		start := time.Now()
		if err := d.attach(v); err != nil {
			return nil, fmt.Errorf("mount %s: %w", r.Name, err)
		}
		attached = true
		d.log.WithFields(logrus.Fields{"volume": r.Name, "took": time.Since(start).Round(time.Millisecond)}).Info("mounted volume")
	}
	if v.Mounts == nil {
		v.Mounts = map[string]int{}
	}
	v.Mounts[r.ID]++
	if err := d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		if attached {
			if err2 := d.detachVolume(r.Name); err2 != nil {
				d.log.WithError(err2).WithField("volume", r.Name).Error("unmount after failed mount")
			}
		}
		return nil, fmt.Errorf("mount %s: record reference: %w", r.Name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "mount_id": r.ID, "references": references(v)}).Debug("mount reference taken")
	return &volume.MountResponse{Mountpoint: d.mountpoint(r.Name)}, nil
}

// attach opens the volume's key and mounts it. On error nothing is left
// mounted.
func (d *Driver) attach(v *store.Volume) error {
	dir := d.backing(v.ID)
	keys, err := d.openVolume(v)
	if err != nil {
		return err
	}
	mp := d.mountpoint(v.Name)
	if err := os.MkdirAll(d.cfg.MountRoot, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(mp, 0o755); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, unix.ENOTCONN) {
		return err
	}
	// Our state says "not mounted", so anything found here is left over
	// from a crashed server or mounted by hand.
	if busy, err := isMountPoint(mp); err != nil {
		return err
	} else if busy {
		d.log.WithField("volume", v.Name).Warn("removing a stale mount at the mountpoint")
		if err := detach(mp); err != nil {
			return err
		}
	}
	m, err := d.cfg.Mounter(dir, mp, v.Name, keys, v.Options.Size, d.log.WithField("volume", v.Name))
	if err != nil {
		os.Remove(mp)
		return err
	}
	lm := &liveMount{m: m, mountpoint: mp}
	d.mu.Lock()
	d.mounted[v.Name] = lm
	delete(d.trouble, v.Name)
	d.mu.Unlock()
	go d.watch(v.Name, lm)
	return nil
}

// watch forgets a mount that ends without Unmount (someone ran umount on
// it), so the next Mount mounts again instead of handing out an empty
// directory.
func (d *Driver) watch(name string, lm *liveMount) {
	lm.m.Wait()
	d.mu.Lock()
	ours := d.mounted[name] == lm
	if ours {
		delete(d.mounted, name)
	}
	d.mu.Unlock()
	if ours && !lm.leaving.Load() {
		d.log.WithField("volume", name).Warn("the volume was unmounted outside securevol; it will be mounted again on the next Mount")
	}
}

// errKeyMismatch: no master key source opens a volume's header.
var errKeyMismatch = errors.New("the daemon's master key does not open this volume (was it created under another key, or were its header's ID or name changed?)")

// errWrongFolder: a folder's authenticated name is another volume's.
var errWrongFolder = errors.New("the backing folder does not match the volume")

// openVolume unwraps v's volume key with the first key source that opens
// its folder and checks that the folder is v's: its header's authenticated
// name must be v's name, so two volumes' folders swapped on disk are
// refused rather than each showing the other's plaintext. A format 1
// folder is upgraded to format 2 on the way, under the database's name.
func (d *Driver) openVolume(v *store.Volume) (*crypto.VolumeKeys, error) {
	dir := d.backing(v.ID)
	root, err := backing.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	h, err := backing.ReadHeader(root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	unlock, err := d.rlockKeys()
	if err != nil {
		return nil, err
	}
	defer unlock()
	ks, keys, err := d.open(h)
	if err != nil {
		return nil, err
	}
	if !h.Authenticated() {
		if h, err = d.upgrade(root, h, ks, v); err != nil {
			return nil, err
		}
	}
	if h.Name != v.Name {
		return nil, fmt.Errorf("%w: %s holds the volume %q, not %q (folders swapped or copied on disk?); refusing it", errWrongFolder, dir, h.Name, v.Name)
	}
	return keys, nil
}

// open unwraps h with the first key source that opens it. keyMu must be
// held.
func (d *Driver) open(h *crypto.Header) (crypto.KeySource, *crypto.VolumeKeys, error) {
	var firstErr error
	for _, ks := range d.keys {
		keys, err := h.Open(ks)
		switch {
		case err == nil:
			return ks, keys, nil
		case errors.Is(err, crypto.ErrHeaderTampered):
			return nil, nil, fmt.Errorf("the master key opens this volume's header, but its name, options or parameters were changed since it was written: %w", err)
		case firstErr == nil:
			firstErr = err
		}
	}
	if errors.Is(firstErr, crypto.ErrWrongKey) {
		return nil, nil, errKeyMismatch
	}
	return nil, nil, firstErr
}

// upgrade rewrites the format 1 header h of v's folder root as format 2,
// binding it to v's name and options as the database records them (never
// to the header's own labels, which nothing authenticates). Only the
// header changes: format 2 keeps every data key.
func (d *Driver) upgrade(root *backing.Dir, h *crypto.Header, ks crypto.KeySource, v *store.Volume) (*crypto.Header, error) {
	nh, err := h.Upgrade(ks, v.Name, optionLabels(v.Options))
	if err == nil {
		err = backing.WriteHeader(root, nh)
	}
	if err != nil {
		return nil, fmt.Errorf("upgrading the folder to format %d: %w", crypto.FormatVersion, err)
	}
	d.log.WithFields(logrus.Fields{"volume": v.Name, "id": v.ID}).Infof("upgraded the folder from format %d to %d (header only; no data rewritten)", h.Format, nh.Format)
	return nh, nil
}

// detachVolume unmounts name if it is mounted. A mount still held by some
// process is detached lazily: it leaves the namespace now and the kernel
// ends it when the last user lets go.
func (d *Driver) detachVolume(name string) error {
	lm := d.live(name)
	if lm == nil {
		return nil
	}
	lm.leaving.Store(true)
	err := unmountWithin(lm.m, d.cfg.UnmountWait)
	if errors.Is(err, errStillServing) {
		// The unmount went through, but the FUSE connection lives on:
		// something outside this mount namespace (a bind mount of the
		// mountpoint made elsewhere) still holds it. Its server keeps
		// serving that holder and ends when it lets go; this request must
		// not wait for that.
		d.log.WithField("volume", name).Warn("the mount is still held outside this mount namespace; its server keeps serving it until released")
		if busy, _ := isMountPoint(lm.mountpoint); busy {
			err = detach(lm.mountpoint)
		} else {
			err = nil
		}
	}
	if err != nil {
		d.log.WithError(err).WithField("volume", name).Warn("unmount failed; detaching lazily")
		if err2 := detach(lm.mountpoint); err2 != nil {
			lm.leaving.Store(false)
			return fmt.Errorf("unmount %s: %w", name, err)
		}
	}
	d.mu.Lock()
	if d.mounted[name] == lm {
		delete(d.mounted, name)
	}
	d.mu.Unlock()
	os.Remove(lm.mountpoint) // only succeeds on the empty, unmounted directory
	return nil
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
	count := v.Mounts[r.ID]
	if count <= 0 {
		// Nothing to release (e.g. the references were lost with the
		// database and rebuilt without them). Failing would only leave
		// the engine unable to stop the container cleanly.
		d.log.WithFields(logrus.Fields{"volume": r.Name, "mount_id": r.ID}).Warn("unmount for a mount ID that holds no reference; ignored")
		return nil
	}
	if count == 1 {
		delete(v.Mounts, r.ID)
	} else {
		v.Mounts[r.ID] = count - 1
	}
	put := func() error { return d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Put(v) }) }
	if err := put(); err != nil {
		return fmt.Errorf("unmount %s: %w", r.Name, err)
	}
	if len(v.Mounts) == 0 {
		if err := d.detachVolume(r.Name); err != nil {
			v.Mounts = map[string]int{r.ID: 1}
			if err2 := put(); err2 != nil {
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
	if err := ValidateName(r.Name); err != nil {
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
	if err := ValidateName(r.Name); err != nil {
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

// Capabilities: volumes live on this host.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// Close unmounts every volume without touching reference counts, so the
// next start mounts again what containers still use. New requests are
// refused from now on; those in flight are waited for (up to closeWait), so
// a Mount finishing meanwhile leaves no live mount behind.
func (d *Driver) Close() error {
	d.mu.Lock()
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
	names := make([]string, 0, len(d.mounted))
	for n := range d.mounted {
		names = append(names, n)
	}
	d.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 32) // each may wait UnmountWait; SIGKILL comes 10 s after SIGTERM
	)
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := d.detachVolume(n); err != nil {
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
	return len(d.mounted)
}
