package driver

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/mountinfo"
	"github.com/securevol/securevol/store"
)

// vol is one volume: its lock, its record while the lock is held, its live
// mount and any problem start-up found with it. The database stays the one
// truth: the record is loaded afresh each time the lock is taken, never
// kept between requests.
type vol struct {
	d     *Driver
	name  string
	token chan struct{} // the lock: holds one token while held (see lock)

	// Guarded by d.mu.
	users   int // lock holders and waiters
	mount   *liveMount
	trouble string

	// Guarded by the lock.
	rec *store.Volume
}

// liveMount is a mount of a volume, from attach until its server ends.
type liveMount struct {
	m          Mount
	mountpoint string
	conn       *fuseConn     // its FUSE connection; nil if unknown
	connErr    error         // why conn is unknown, if it is not for want of FUSE
	ended      chan struct{} // closed when its server has ended
	leaving    atomic.Bool   // set while we unmount it ourselves
	// claim is its claim on the folder (see hold), let go when it ends.
	claim hold
}

// hold is a mount's claim on a folder: to write it (a volume's own
// mount) or to read it (a view's). In cluster mode it is a
// *cluster.Claim, whose fence trips when the node's lease is lost; on a
// single host a *localHold, which has no fence.
type hold interface {
	Release() error
	Fence() *backing.Fence
}

// release lets go of lm's claim, if any.
func (d *Driver) release(name string, lm *liveMount) {
	if lm.claim == nil {
		return
	}
	if err := lm.claim.Release(); err != nil {
		d.log.WithError(err).WithField("volume", name).Warn("letting go of the volume's cluster claim; other nodes wait for this node's lease instead")
	}
}

func (v *vol) dir() string { return v.d.backing(v.rec.ID) }

// save writes the record, fsynced, before the driver answers the engine.
// In cluster mode the references stay out of it (see saveRefs).
func (v *vol) save() error { return v.saveIf(nil) }

// saveIf is save if check (nil: none) passes in the same transaction.
func (v *vol) saveIf(check func(*store.Tx) error) error {
	rec := v.rec
	if v.d.clustered() {
		r := *rec
		r.Mounts = nil
		rec = &r
	}
	return v.d.cfg.Store.Update(func(tx *store.Tx) error {
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		return tx.Put(rec)
	})
}

// create makes the volume's backing folder and record with options opts.
// On error nothing is left.
func (v *vol) create(opts store.Options) error {
	id, err := newID()
	if err != nil {
		return err
	}
	d := v.d
	dir := d.backing(id)
	if err := os.MkdirAll(d.volDir, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	// The backing root's owner and mode are what the FUSE root shows. They
	// are set before the header is written: a create cut short after the
	// header is recovered at the next start, and must come back with them.
	err = applyOwner(dir, opts)
	var hdr *crypto.Header
	if err == nil {
		var unlock func()
		if unlock, err = d.rlockKeys(); err == nil {
			err = backing.WithRoot(dir, func(root *backing.Dir) (err error) {
				hdr, _, err = backing.InitVolume(root, d.keys[0], v.name, optionLabels(opts))
				return err
			})
			unlock()
		}
	}
	if err == nil {
		v.rec = &store.Volume{ID: id, Name: v.name, DirID: hdr.ID, Options: opts, CreatedAt: hdr.Created}
		err = v.save()
	}
	if err != nil {
		v.rec = nil
		if err2 := d.discard(dir, v.name, ""); err2 != nil {
			d.log.WithError(err2).WithField("volume", v.name).Error("cleaning up after a failed create")
		}
		return err
	}
	return nil
}

// remove marks the record, destroys the key, deletes the folder, then the
// record.
func (v *vol) remove() error {
	d := v.d
	if !v.rec.Removing {
		if err := d.mayDiscard(v.dir(), v.name, v.rec.DirID); err != nil {
			return err
		}
		v.rec.Removing = true
		if err := v.saveIf(func(tx *store.Tx) error { return refuseViewed(tx, v.name) }); err != nil {
			v.rec.Removing = false
			return err
		}
	}
	if err := d.discard(v.dir(), v.name, v.rec.DirID); err != nil {
		return err
	}
	if err := d.cfg.Store.Update(func(tx *store.Tx) error { return tx.Delete(v.name) }); err != nil {
		return err
	}
	d.gone(v.name)
	return nil
}

// attach opens the volume's key and mounts it, or the source's read-only
// for a view (see attachView). It claims the folder first (in cluster
// mode, since opening may upgrade the folder's header; on a single host
// so that no view of it is mounted meanwhile). On error nothing is left
// mounted or claimed.
func (v *vol) attach() error {
	if v.rec.View != nil {
		return v.attachView()
	}
	claim, err := v.claimWrite()
	if err != nil {
		return err
	}
	keys, err := v.open()
	if err == nil {
		err = v.attachUnder(claim, v.dir(), keys, MountOptions{Size: v.rec.Options.Size, Fence: claim.Fence()})
	}
	if err != nil {
		d := v.d
		d.release(v.name, &liveMount{claim: claim})
		return err
	}
	return nil
}

// claimWrite claims the volume's folder for writing: in etcd, waiting up
// to the mount wait for other nodes, or on this host.
func (v *vol) claimWrite() (hold, error) {
	d := v.d
	if !d.clustered() {
		return d.holdLocally(v.name, "")
	}
	return v.claim(d.cfg.Cluster.MountWait())
}

// attachUnder mounts the folder dir, opened with keys, under claim.
func (v *vol) attachUnder(claim hold, dir string, keys *crypto.VolumeKeys, mopts MountOptions) error {
	d := v.d
	mp := d.mountpoint(v.name)
	if err := os.MkdirAll(d.cfg.MountRoot, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(mp, 0o755); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, unix.ENOTCONN) {
		return err
	}
	// Our state says "not mounted", so anything found here is left over
	// from a crashed server or mounted by hand. Mountinfo tells, where a
	// stat could hang on a hung server.
	if stale, err := mountinfo.At(mp); err != nil {
		return err
	} else if stale != nil {
		d.log.WithField("volume", v.name).Warn("removing a stale mount at the mountpoint")
		if err := detach(mp); err != nil {
			return err
		}
	}
	m, err := d.cfg.Mounter(dir, mp, v.name, keys, mopts, d.log.WithField("volume", v.name))
	if err != nil {
		os.Remove(mp)
		return err
	}
	conn, connErr := d.connOf(mp)
	lm := &liveMount{m: m, mountpoint: mp, conn: conn, connErr: connErr, ended: make(chan struct{}), claim: claim}
	d.mu.Lock()
	v.mount = lm
	v.trouble = ""
	d.mu.Unlock()
	go v.watch(lm)
	return nil
}

// watch forgets a mount that ends without Unmount (someone ran umount on
// it), so the next Mount mounts again instead of handing out an empty
// directory.
func (v *vol) watch(lm *liveMount) {
	lm.m.Wait()
	close(lm.ended)
	d := v.d
	d.mu.Lock()
	ours := v.mount == lm
	if ours {
		v.mount = nil
		d.tidy(v)
	}
	d.mu.Unlock()
	if ours && !lm.leaving.Load() {
		d.log.WithField("volume", v.name).Warn("the volume was unmounted outside securevol; it will be mounted again on the next Mount")
		d.release(v.name, lm)
	}
}

// open unwraps the volume key of the volume's folder (see verify).
func (v *vol) open() (*crypto.VolumeKeys, error) {
	var keys *crypto.VolumeKeys
	err := backing.WithRoot(v.dir(), func(root *backing.Dir) (err error) {
		_, _, keys, err = v.verify(root)
		return err
	})
	return keys, err
}

// verify unwraps the volume key of the folder root with the first key
// source that opens it and checks that the folder is this volume's: its
// header's authenticated name must be the volume's name, and its directory
// ID the record's DirID, so two volumes' folders swapped on disk
// (namesakes included) are refused rather than each showing the other's
// plaintext. A format 1 folder is upgraded to format 2 on the way, under
// the database's name. It returns the header (as it is now), the key
// source that opens it and the volume's keys.
func (v *vol) verify(root *backing.Dir) (*crypto.Header, crypto.KeySource, *crypto.VolumeKeys, error) {
	d := v.d
	dir := v.dir()
	h, err := backing.ReadHeader(root)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	unlock, err := d.rlockKeys()
	if err != nil {
		return nil, nil, nil, err
	}
	defer unlock()
	ks, keys, err := d.open(h)
	if err != nil {
		return nil, nil, nil, err
	}
	if h.Authenticated() && h.Name != v.name {
		return nil, nil, nil, fmt.Errorf("%w: %s holds the volume %q, not %q (folders swapped or copied on disk?); refusing it", errWrongFolder, dir, h.Name, v.name)
	}
	// The key opened, so h.ID is authentic: it tells this volume's folder
	// from a namesake's. A record from before DirID is bound now.
	if v.rec.DirID == "" {
		v.rec.DirID = h.ID
	} else if h.ID != v.rec.DirID {
		return nil, nil, nil, fmt.Errorf("%w: %s holds another folder of the volume %q (directory ID %s, not %s: a removed namesake's, or a copy, swapped in?); refusing it", errWrongFolder, dir, v.name, h.ID, v.rec.DirID)
	}
	if !h.Authenticated() {
		// Bound to the database's name, so the name now matches.
		if h, err = v.upgrade(root, h, ks); err != nil {
			return nil, nil, nil, err
		}
	}
	return h, ks, keys, nil
}

// upgrade rewrites the format 1 header h of the volume's folder root as
// format 2, binding it to the name and options the database records
// (never to the header's own labels, which nothing authenticates), and
// returns the new header. Only the header changes: format 2 keeps every
// data key.
func (v *vol) upgrade(root *backing.Dir, h *crypto.Header, ks crypto.KeySource) (*crypto.Header, error) {
	nh, err := h.Upgrade(ks, v.name, optionLabels(v.rec.Options))
	if err == nil {
		err = backing.WriteHeader(root, nh)
	}
	if err != nil {
		return nil, fmt.Errorf("upgrading the folder to format %d: %w", crypto.FormatVersion, err)
	}
	v.d.log.WithFields(logrus.Fields{"volume": v.name, "id": v.rec.ID}).Infof("upgraded the folder from format %d to %d (header only; no data rewritten)", h.Format, nh.Format)
	return nh, nil
}

// detach unmounts the volume if it is mounted. A mount still held by some
// process is detached lazily: it leaves the namespace now and the kernel
// ends it when the last user lets go. It never waits for the FUSE server
// without bound (see settle). It needs no record, and Close calls it
// without the lock.
func (v *vol) detach() error {
	d := v.d
	lm := d.live(v.name)
	if lm == nil {
		return nil
	}
	log := d.log.WithField("volume", v.name)
	lm.leaving.Store(true)
	if err := unmountWithin(lm.m, d.cfg.UnmountWait); err != nil {
		if errors.Is(err, errStillServing) {
			// The unmount went through, but the FUSE connection lives on:
			// something outside this mount namespace (a bind mount of the
			// mountpoint made elsewhere) still holds it, or the server
			// hangs. This request must not wait for either.
			log.Warn("the mount is still held outside this mount namespace; its server keeps serving it until released")
		} else {
			log.WithError(err).Warn("unmount failed; detaching lazily")
		}
		// Lazily, whatever is still mounted there (nothing, after the
		// unmount that went through).
		if err2 := detach(lm.mountpoint); err2 != nil {
			lm.leaving.Store(false)
			return fmt.Errorf("unmount %s: %w", v.name, err2)
		}
		d.settle(log, lm)
	}
	d.mu.Lock()
	if v.mount == lm {
		v.mount = nil
		d.tidy(v)
	}
	d.mu.Unlock()
	os.Remove(lm.mountpoint) // only succeeds on the empty, unmounted directory
	d.release(v.name, lm)
	return nil
}

// settle makes sure that a mount which has left the namespace, but whose
// server has not ended, holds nobody for ever. A server with no request
// waiting is idle: something still holds its connection (an open file, a
// bind mount in another namespace) and it goes on serving that holder;
// so is one that answers requests (the count waiting drops), however
// many more come. One that leaves requests unanswered and answers none
// for UnmountWait is hung: its connection is aborted, which fails those
// requests and ends the mount for every holder.
func (d *Driver) settle(log *logrus.Entry, lm *liveMount) {
	if lm.conn == nil {
		if lm.connErr != nil {
			log.WithError(lm.connErr).Warn("cannot watch the FUSE connection of the detached mount; if its server hangs, what waits on it keeps waiting")
		}
		return
	}
	last := -1
	for deadline := time.Now().Add(d.cfg.UnmountWait); ; time.Sleep(10 * time.Millisecond) {
		select {
		case <-lm.ended:
			return
		default:
		}
		n, err := lm.conn.waiting()
		if errors.Is(err, os.ErrNotExist) || err == nil && (n == 0 || last >= 0 && n < last) {
			// The connection ended, or the server is idle, or it answered
			// a request: a busy holder is being served, not stuck.
			return
		}
		if err != nil {
			log.WithError(err).Warn("reading the FUSE connection's waiting requests")
			return
		}
		if time.Now().After(deadline) {
			break
		}
		last = n
	}
	if err := lm.conn.abort(); err != nil {
		log.WithError(err).Error("aborting the FUSE connection of a hung server")
		return
	}
	log.WithField("connection", lm.conn.dir).Warn("the FUSE server left requests unanswered after the unmount; its connection is aborted (what waited on it gets an error)")
}
