package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/fsck"
	"github.com/securevol/securevol/store"
)

// Snapshots and imports: a volume's backing folder copied out while it
// stays usable, and a copied folder taken in as a new volume. The copying
// itself (package archive) is the caller's; the driver keeps the volume
// still meanwhile, and makes sure an imported folder is authentic and
// becomes a volume of its own, whole or not at all.

// freezeWait bounds how long a snapshot waits for a mounted volume's
// requests in flight to finish before it holds the rest.
const freezeWait = 10 * time.Second

// Snapshot runs fn on the backing folder of the volume name while nothing
// changes it: the volume's lock is held throughout (no mount, unmount or
// removal meanwhile), and if the volume is mounted, its changing requests
// are held (cryptfs.Freezer; reads go on) until fn returns. fn gets the
// open folder, its header (authenticated, and checked to be this
// volume's, see vol.verify) and the key source that opens it. Containers
// that write to the volume wait while fn runs, and engine requests for it
// (a new container mounting it) wait for the lock up to LockWait, so fn
// should copy and nothing else.
func (d *Driver) Snapshot(ctx context.Context, name string, fn func(root *backing.Dir, h *crypto.Header, ks crypto.KeySource) error) error {
	v, unlock, err := d.lockVolume(name)
	if err != nil {
		return err
	}
	defer unlock()
	if v.rec.Removing {
		return classed(ErrConflict, "snapshot %s: the volume is being removed", name)
	}
	if v.rec.View != nil {
		return classed(ErrInvalid, "snapshot %s: it is a read-only view of %s, with no folder of its own; use %s", name, v.rec.View.Of, v.rec.View.Of)
	}
	root, err := backing.OpenRoot(v.dir())
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer root.Close()
	h, ks, _, err := v.verify(root)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", name, err)
	}
	if lm := d.live(name); lm != nil {
		thaw, err := freeze(ctx, lm)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", name, err)
		}
		start := time.Now()
		defer func() {
			thaw()
			d.log.WithFields(logrus.Fields{"volume": name, "held": time.Since(start).Round(time.Millisecond)}).Info("snapshot taken; the volume's writes were held meanwhile")
		}()
	}
	return fn(root, h, ks)
}

// freeze holds the changes of the live mount lm, waiting at most
// freezeWait for those in flight.
func freeze(ctx context.Context, lm *liveMount) (thaw func(), err error) {
	fz, ok := lm.m.(freezable)
	if !ok {
		return nil, classed(ErrUnavailable, "the volume's mount cannot hold its writes; stop the containers that use it first")
	}
	ctx, cancel := context.WithTimeout(ctx, freezeWait)
	defer cancel()
	thaw, err = fz.Freeze(ctx)
	if err != nil {
		return nil, classed(ErrUnavailable, "%w; try again when the volume is less busy", err)
	}
	return thaw, nil
}

// partialSuffix marks a folder under the volumes directory that an import
// is filling: no volume yet. Start-up deletes such folders (imports cut
// short) and key rotations skip them (an import wraps its header under
// the current key, holding keyMu, as it moves the folder into place).
const partialSuffix = ".partial"

func isPartial(id string) bool { return strings.HasSuffix(id, partialSuffix) }

// Import makes a new volume called name from a backing folder copied from
// elsewhere (a volume archive), whole or not at all:
//
//  1. fill writes the folder into a new, empty one (<id>.partial) and
//     returns the key source that opens its header (nil: the daemon's own
//     master keys);
//  2. the header must be format 2 and open with that key source, and
//     every name, block, symlink target and extended attribute must
//     authenticate (fsck);
//  3. holding name's lock, and only if name is still free, the header is
//     re-wrapped under the daemon's master key for name with a fresh
//     directory ID (crypto.Header.Rebind), the folder moves to its place
//     and the volume's record is written. Its options are the header's
//     (authenticated) labels.
//
// On any error the folder is deleted. A crash leaves either a .partial
// folder, deleted at the next start, or a complete folder without
// record, which the next start recovers as name. A name in use is
// refused with ErrConflict before anything is copied, and again at the
// end.
func (d *Driver) Import(name string, fill func(root *backing.Dir) (crypto.KeySource, error)) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := d.nameFree(name); err != nil {
		return err
	}
	if d.wrongKey.Load() {
		return classed(ErrUnavailable, "import %s: the daemon's master key opens none of the existing volumes; no volume is made under it", name)
	}
	id, err := newID()
	if err != nil {
		return err
	}
	partial := d.backing(id) + partialSuffix
	if err := os.MkdirAll(d.volDir, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(partial, 0o700); err != nil {
		return err
	}
	start := time.Now()
	rep, err := d.adopt(name, id, partial, fill)
	if err != nil {
		if err2 := d.removeAll(partial); err2 != nil {
			d.log.WithError(err2).WithField("folder", partial).Error("deleting the folder of a failed import")
		}
		return fmt.Errorf("import %s: %w", name, err)
	}
	d.log.WithFields(logrus.Fields{"volume": name, "id": id, "files": rep.Files, "blocks": rep.Blocks,
		"took": time.Since(start).Round(time.Millisecond)}).Info("imported volume (every block authenticated)")
	return nil
}

// nameFree refuses a name that a volume has.
func (d *Driver) nameFree(name string) error {
	_, err := d.cfg.Store.Get(name)
	switch {
	case err == nil:
		return classed(ErrConflict, "volume %s already exists; remove it first or choose another name", name)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

// adopt is Import's work on the folder partial, which becomes volume id.
// On error the caller deletes partial; nothing else is left.
func (d *Driver) adopt(name, id, partial string, fill func(root *backing.Dir) (crypto.KeySource, error)) (fsck.Report, error) {
	var ks crypto.KeySource
	if err := backing.WithRoot(partial, func(root *backing.Dir) (err error) {
		ks, err = fill(root)
		return err
	}); err != nil {
		return fsck.Report{}, err
	}
	h, ks, rep, err := d.authenticate(partial, ks)
	if err != nil {
		return rep, err
	}
	opts, err := labelOptions(h.Labels)
	if err != nil {
		return rep, classed(ErrInvalid, "the archived volume's options: %w", err)
	}
	// The root directory's owner and mode are the options', whatever
	// the copy gave it.
	if err := applyOwner(partial, opts); err != nil {
		return rep, err
	}
	v, unlock, err := d.lockName(name)
	if err != nil {
		return rep, err
	}
	defer unlock()
	if err := d.nameFree(name); err != nil {
		return rep, err
	}
	unlockKeys, err := d.rlockKeys()
	if err != nil {
		return rep, err
	}
	defer unlockKeys()
	nh, err := h.Rebind(ks, d.keys[0], name)
	if err == nil {
		err = backing.WithRoot(partial, func(root *backing.Dir) error { return backing.WriteHeader(root, nh) })
	}
	if err != nil {
		return rep, fmt.Errorf("re-wrapping the volume key: %w", err)
	}
	// The restored files reach the disk before the volume is recorded: a
	// power cut must not leave a record over a folder that lost them.
	if err := backing.WithRoot(partial, func(root *backing.Dir) error { return root.SyncFS() }); err != nil {
		return rep, fmt.Errorf("flushing the imported folder: %w", err)
	}
	final := d.backing(id)
	if err := os.Rename(partial, final); err != nil {
		return rep, err
	}
	if err := backing.WithRoot(d.volDir, func(vols *backing.Dir) error { return vols.Sync() }); err != nil {
		return rep, fmt.Errorf("flushing the volumes folder: %w", err)
	}
	v.rec = &store.Volume{ID: id, Name: name, DirID: nh.ID, Options: opts, CreatedAt: nh.Created}
	if err := v.save(); err != nil {
		v.rec = nil
		// Back to partial, for the caller to delete: without its record
		// it would come back as name at the next start.
		if err2 := os.Rename(final, partial); err2 != nil {
			d.log.WithError(err2).WithField("folder", final).Error("a failed import's folder stays; the next start recovers it as the volume")
		}
		return rep, err
	}
	return rep, nil
}

// authenticate opens the header of the folder dir with ks (nil: the
// daemon's master keys) and checks every name, block, symlink target and
// extended attribute below it. It returns the header and the key source
// that opens it.
func (d *Driver) authenticate(dir string, ks crypto.KeySource) (*crypto.Header, crypto.KeySource, fsck.Report, error) {
	h, err := backing.ReadHeaderAt(dir)
	if err != nil {
		return nil, nil, fsck.Report{}, classed(ErrInvalid, "the archived folder's header: %w", err)
	}
	if !h.Authenticated() {
		return nil, nil, fsck.Report{}, classed(ErrInvalid, "the archived folder has a format %d header, which authenticates neither name nor options; mount the volume once where it was made (that upgrades it) and export it again", h.Format)
	}
	keys, ks, err := d.openWith(h, ks)
	if err != nil {
		return nil, nil, fsck.Report{}, err
	}
	var first *fsck.Problem
	rep, err := fsck.Check(dir, keys, func(p fsck.Problem) {
		if first == nil {
			first = &p
		}
	})
	if err != nil {
		return nil, nil, rep, fmt.Errorf("authenticating the archived folder: %w", err)
	}
	if rep.Problems > 0 {
		return nil, nil, rep, classed(ErrInvalid, "%d item(s) of the archived folder fail authentication (first: %s): it was damaged or tampered with", rep.Problems, first.What)
	}
	return h, ks, rep, nil
}

// openWith opens h with ks, or with the daemon's master keys if ks is nil.
func (d *Driver) openWith(h *crypto.Header, ks crypto.KeySource) (*crypto.VolumeKeys, crypto.KeySource, error) {
	if ks != nil {
		keys, err := h.Open(ks)
		if err != nil {
			return nil, nil, classed(ErrInvalid, "the archive's handover does not open its header (an archive put together from two?): %w", err)
		}
		return keys, ks, nil
	}
	unlock, err := d.rlockKeys()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	ks, keys, err := d.open(h)
	if errors.Is(err, errKeyMismatch) {
		return nil, nil, classed(ErrInvalid, "the daemon's master key does not open the archive: it was exported under another master key without a handover (export it with recipients or a passphrase)")
	}
	return keys, ks, err
}
