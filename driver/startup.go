package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

// StartReport says what Start found and did.
type StartReport struct {
	Volumes     int      // volumes in the database after reconciliation
	InGrace     int      // removed volumes kept for Undelete until their purge time
	Quarantined []string // names whose damaged records were moved aside (see Driver.Quarantined)
	Recovered   []string // volumes re-added from their folders' headers
	Finished    []string // removals cut short earlier and finished now
	StaleMounts int      // dead or leftover mounts detached under the mount root
	Remounted   int      // volumes mounted again because references remain
	Problems    []string // what needs a human (also logged)
	Took        time.Duration
}

// Start brings the driver in line with the disk before the socket opens:
// it moves damaged records aside, reconciles the database with the backing
// folders, detaches stale mounts under the mount root and mounts again
// every volume that still has references. Removed volumes whose grace has
// ended are purged from then on, in the background (see purgeLoop).
// Problems with single volumes are reported, not fatal.
func (d *Driver) Start() (*StartReport, error) {
	start := time.Now()
	rep := &StartReport{}
	if err := os.MkdirAll(d.volDir, 0o700); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	if err := os.MkdirAll(d.cfg.MountRoot, 0o755); err != nil {
		return nil, fmt.Errorf("start: mount root: %w", err)
	}
	// Mountinfo names mounts by their real path: a mount root reached
	// through a symlink would hide every mount below it (stale ones from
	// cleanMounts, a hung one's connection from detach).
	root, err := filepath.EvalSymlinks(d.cfg.MountRoot)
	if err != nil {
		return nil, fmt.Errorf("start: mount root: %w", err)
	}
	d.cfg.MountRoot = root
	if err := d.quarantine(rep); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	if err := d.reconcile(rep); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	d.verify(rep)
	d.checkKey(rep)
	if err := d.cleanMounts(rep); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	if err := d.remount(rep); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	go d.purgeLoop()
	rep.Took = time.Since(start)
	return rep, nil
}

// startRemovalWait bounds how long Start waits for the removals cut short
// earlier to finish; a longer one goes on in the background, so the socket
// opens within the engine's ~9 s.
const startRemovalWait = 3 * time.Second

type folder struct {
	id  string
	hdr *crypto.Header
}

// reconcile makes the database and the folders agree:
//   - a folder whose header names a volume the database lacks is added
//     back (database lost or rebuilt; or a crash between writing the
//     header and the record);
//   - a record marked Removing is removed for good;
//   - a record without a folder, and a folder that can't be placed, are
//     reported and left alone;
//   - a folder without header and without data (a create cut short before
//     its header was written) is deleted, and so is the folder of an
//     import cut short (<id>.partial).
func (d *Driver) reconcile(rep *StartReport) error {
	records, err := d.cfg.Store.List()
	if err != nil {
		return err
	}
	removed, err := d.cfg.Store.Removed()
	if err != nil {
		return err
	}
	// The folders of removals cut short have data and maybe no header:
	// they are finished below (or by the purge), not reported as keyless.
	// Removed volumes' folders are recorded: they are no lost volumes to
	// recover, and the purge finishes those it had begun.
	removing := map[string]bool{}
	recorded := map[string]bool{}
	for _, v := range slices.Concat(records, removed) {
		recorded[v.ID] = true
		if v.Removing {
			removing[v.ID] = true
		}
	}
	rep.InGrace = len(removed)
	ents, err := os.ReadDir(d.volDir)
	if err != nil {
		return err
	}
	byName := map[string][]folder{}
	ids := map[string]bool{}
	for _, e := range ents {
		dir := d.backing(e.Name())
		if !e.IsDir() {
			d.problem(rep, "", fmt.Sprintf("%s is not a volume folder; ignored", dir))
			continue
		}
		if isPartial(e.Name()) {
			// An import cut short: the archive it came from is still there.
			// In a cluster it may be another node's import in progress.
			if d.clustered() {
				continue
			}
			if err := d.removeAll(dir); err == nil {
				d.log.WithField("folder", dir).Info("deleted the folder of an import that was cut short")
			}
			continue
		}
		ids[e.Name()] = true
		if removing[e.Name()] {
			continue
		}
		h, err := readHeader(dir)
		if errors.Is(err, backing.ErrNoHeader) {
			if onlyInternal(dir) {
				if d.clustered() {
					continue // maybe another node's create in progress
				}
				if err := os.RemoveAll(dir); err == nil {
					d.log.WithField("folder", dir).Info("deleted the folder of a create that was cut short")
				}
				continue
			}
			// Not deleted automatically: maybe someone is restoring it.
			d.problem(rep, "", fmt.Sprintf("%s has data but no %s: its key is gone and its contents cannot be decrypted; delete it or restore the header", dir, crypto.HeaderName))
			continue
		}
		if err != nil {
			d.problem(rep, "", err.Error())
			continue
		}
		if recorded[e.Name()] {
			continue // verify checks it against its record
		}
		name, ok := d.claimedName(rep, dir, h)
		if !ok {
			continue
		}
		if ValidateName(name) != nil {
			d.problem(rep, "", fmt.Sprintf("%s: header names no valid volume; ignored", dir))
			continue
		}
		byName[name] = append(byName[name], folder{e.Name(), h})
	}

	inDB := map[string]*store.Volume{}
	removalDeadline := time.Now().Add(startRemovalWait)
	for _, v := range records {
		inDB[v.Name] = v
		if v.Removing {
			if done, err := d.finishRemoval(v, removalDeadline); err != nil {
				d.problem(rep, v.Name, fmt.Sprintf("finishing its removal: %v", err))
			} else if done {
				rep.Finished = append(rep.Finished, v.Name)
				d.log.WithField("volume", v.Name).Info("finished a removal that was cut short")
			}
			delete(inDB, v.Name)
			delete(byName, v.Name) // its folder is gone or keyless now
			continue
		}
		if v.View == nil && !ids[v.ID] {
			d.problem(rep, v.Name, fmt.Sprintf("backing folder %s is missing; the volume cannot be mounted (restore the folder, or docker volume rm %s)", d.backing(v.ID), v.Name))
		}
	}

	var add []*store.Volume
	for name, fs := range byName {
		sort.Slice(fs, func(i, j int) bool {
			if !fs[i].hdr.Created.Equal(fs[j].hdr.Created) {
				return fs[i].hdr.Created.Before(fs[j].hdr.Created)
			}
			return fs[i].id < fs[j].id
		})
		keep := ""
		if v := inDB[name]; v != nil {
			keep = v.ID
		} else {
			f := fs[0]
			opts, err := labelOptions(f.hdr.Labels)
			if err != nil {
				d.problem(rep, name, fmt.Sprintf("folder %s: %v; not recovered", d.backing(f.id), err))
				continue
			}
			add = append(add, &store.Volume{ID: f.id, Name: name, DirID: f.hdr.ID, CreatedAt: f.hdr.Created, Options: opts})
			keep = f.id
		}
		for _, f := range fs {
			if f.id != keep {
				d.problem(rep, name, fmt.Sprintf("folder %s also claims this name but the volume is %s; left alone", d.backing(f.id), d.backing(keep)))
			}
		}
	}
	if len(add) > 0 {
		if err := d.cfg.Store.Update(func(tx *store.Tx) error {
			for _, v := range add {
				if err := tx.Put(v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("recover volumes: %w", err)
		}
		for _, v := range add {
			rep.Recovered = append(rep.Recovered, v.Name)
			d.log.WithFields(logrus.Fields{"volume": v.Name, "id": v.ID}).Warn("volume recovered from its folder (it was missing from the database; mount references, if any, are lost)")
		}
		sort.Strings(rep.Recovered)
	}
	var n int
	err = d.cfg.Store.View(func(tx *store.Tx) error { n = tx.Count(); return nil })
	rep.Volumes = n
	return err
}

// claimedName is the volume name that a folder without a database record
// claims, if it may be recovered under it. A format 2 header must open
// with the daemon's key: its name and options are then authenticated. A
// format 1 header's labels are all there is; they are used, and the log
// says so.
func (d *Driver) claimedName(rep *StartReport, dir string, h *crypto.Header) (string, bool) {
	if !h.Authenticated() {
		d.log.WithField("folder", dir).Warnf("recovering a format %d folder: its volume name and options come from its header's labels, which format %d does not authenticate (anyone who could write the folder could have set them)", h.Format, h.Format)
		return h.VolumeName(), true
	}
	d.keyMu.RLock()
	_, _, err := d.open(h)
	d.keyMu.RUnlock()
	if err != nil {
		d.problem(rep, "", fmt.Sprintf("%s has no database record and its header cannot be authenticated (%v); not recovered", dir, err))
		return "", false
	}
	return h.Name, true
}

// verify opens every volume's folder once at start: a folder that is not
// its volume's (folders swapped on disk, a tampered header) is reported and
// refused before anything mounts it, format 1 folders are upgraded to
// format 2 under their database names, and records from before DirID are
// bound to their folders. A key that opens nothing is
// checkKey's to report. A view's source is checked to be the volume it
// was made of.
func (d *Driver) verify(rep *StartReport) {
	all, err := d.cfg.Store.List()
	if err != nil {
		return
	}
	for _, rec := range all {
		if rec.Removing || d.getTrouble(rec.Name) != "" {
			continue
		}
		if rec.View != nil {
			// No folder of its own: its source must still be the
			// volume it was made of.
			if _, err := d.sourceOf(rec); err != nil {
				d.problem(rep, rec.Name, err.Error())
			}
			continue
		}
		err := d.with(rec, func(v *vol) error {
			bound := rec.DirID != ""
			if _, err := v.open(); err != nil || bound {
				return err
			}
			return v.save() // the folder's directory ID, bound by open
		})
		switch {
		case err == nil, errors.Is(err, errKeyMismatch), errors.Is(err, unix.ENOENT), errors.Is(err, backing.ErrNoHeader):
		default:
			d.problem(rep, rec.Name, err.Error())
		}
	}
}

// with runs fn on rec's volume, holding its lock, as start-up does for
// each volume before any request arrives.
func (d *Driver) with(rec *store.Volume, fn func(*vol) error) error {
	v, err := d.lock(rec.Name)
	if err != nil {
		return err
	}
	defer v.unlock()
	v.rec = rec
	return fn(v)
}

// finishRemoval finishes a removal cut short, holding the volume's lock. If
// it is not done by deadline (a huge folder) it goes on in the background,
// still holding the lock, and done is false.
func (d *Driver) finishRemoval(rec *store.Volume, deadline time.Time) (done bool, err error) {
	v, err := d.lock(rec.Name)
	if err != nil {
		return false, err
	}
	v.rec = rec
	res := make(chan error, 1)
	go func() {
		defer v.unlock()
		res <- v.remove()
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-res:
		return true, err
	case <-t.C:
	}
	d.log.WithField("volume", rec.Name).Info("finishing a removal that was cut short, in the background (its key is destroyed first)")
	go func() {
		if err := <-res; err != nil {
			d.setTrouble(rec.Name, "error: finishing its removal: "+err.Error())
			d.log.WithError(err).WithField("volume", rec.Name).Error("finishing a removal that was cut short")
			return
		}
		d.log.WithField("volume", rec.Name).Info("finished a removal that was cut short")
	}()
	return false, nil
}

// checkKey tries at most keyCheckVolumes volumes, for at most keyCheckTime
// (a passphrase may need a key derivation per salt): enough that a few
// volumes under some other key raise no false alarm.
const (
	keyCheckVolumes = 100
	keyCheckTime    = 2 * time.Second
)

// checkKey tries the master key on the volumes. A key that opens none of
// them is the wrong one: volumes stay listed (the engine forgets volumes
// whose Get fails), but Create is refused, or new volumes would be made
// under a key that is about to be corrected.
func (d *Driver) checkKey(rep *StartReport) {
	all, err := d.cfg.Store.List()
	if err != nil {
		return
	}
	d.keyMu.RLock()
	defer d.keyMu.RUnlock()
	tried, start := 0, time.Now()
	for _, v := range all {
		if tried == keyCheckVolumes || time.Since(start) > keyCheckTime {
			break
		}
		if v.Removing {
			continue
		}
		h, err := readHeader(d.backing(v.ID))
		if err != nil {
			continue
		}
		tried++
		for _, ks := range d.keys {
			_, err := h.Open(ks)
			if err == nil {
				return
			}
			if !errors.Is(err, crypto.ErrWrongKey) {
				return // not a verdict on the key
			}
		}
	}
	if tried > 0 {
		d.wrongKey.Store(true)
		d.problem(rep, "", fmt.Sprintf("the master key (%s) opens none of the %d volumes tried: wrong passphrase, key file or key command? Their mounts fail and new volumes are refused until securevol restarts with the right key", d.cfg.KeyKind, tried))
	}
}

func (d *Driver) problem(rep *StartReport, name, msg string) {
	if name != "" {
		msg = "volume " + name + ": " + msg
		d.setTrouble(name, "error: "+msg)
	}
	rep.Problems = append(rep.Problems, msg)
	d.log.Error(msg)
}

// onlyInternal reports whether dir holds nothing but securevol's own
// bookkeeping (the state of an InitVolume that never wrote its header).
func onlyInternal(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !crypto.IsInternalName(e.Name()) || e.IsDir() {
			return false
		}
	}
	return true
}

// labelOptions reads a volume's options back from its header labels.
func labelOptions(labels map[string]string) (store.Options, error) {
	opts := map[string]string{}
	for _, k := range []string{"uid", "gid", "mode", "size"} {
		if v, ok := labels[k]; ok {
			opts[k] = v
		}
	}
	return ParseOptions(opts)
}

// cleanMounts detaches every securevol mount below the mount root: at
// start none of them is live, so what is mounted is left from a previous
// server (dead FUSE mounts answer "transport endpoint is not connected").
// Other mounts there are not ours (the mount root may be a shared /mnt) and
// stay; so does the mount root itself (a managed plugin's propagatedMount).
func (d *Driver) cleanMounts(rep *StartReport) error {
	mps, err := ourMountsUnder(d.cfg.MountRoot)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	root := filepath.Clean(d.cfg.MountRoot)
	for _, mp := range mps {
		if mp == root {
			continue
		}
		if err := detach(mp); err != nil {
			d.problem(rep, "", fmt.Sprintf("stale mount %s: %v", mp, err))
			continue
		}
		rep.StaleMounts++
		d.log.WithField("mountpoint", mp).Info("detached a stale mount")
	}
	// Empty mountpoint directories of volumes that are not in use go too.
	ents, err := os.ReadDir(d.cfg.MountRoot)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			os.Remove(filepath.Join(d.cfg.MountRoot, e.Name())) // fails unless empty: fine
		}
	}
	return nil
}

// remount mounts every volume that still has references, a few at a time.
func (d *Driver) remount(rep *StartReport) error {
	all, err := d.cfg.Store.List()
	if err != nil {
		return err
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		sem = make(chan struct{}, 4)
	)
	for _, v := range all {
		if len(v.Mounts) == 0 || v.Removing || d.getTrouble(v.Name) != "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := d.with(v, (*vol).attach)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				d.problem(rep, v.Name, fmt.Sprintf("mounting again for its %d references: %v", references(v), err))
				return
			}
			rep.Remounted++
		}()
	}
	wg.Wait()
	return nil
}
