package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/store"
)

// A removal with a grace period (Config.RemoveGrace) moves the volume's
// record to the store's removed bucket, keyed by folder ID: Get and List
// answer "no such volume" for it at once, so the engine forgets it, while
// its folder and key stay until its purge time.
//
// The name is free meanwhile: `docker compose down -v` and then `up`
// creates a new, empty volume of that name, as without a grace, and
// refusing it would break that routine. The removed volume can then be
// brought back once the name is free again (the new one removed in its
// turn), by its ID when several removed volumes share the name.

// RemovedVolume is a volume removed within its grace period.
type RemovedVolume struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"` // its folder; tells apart removed volumes of one name
	CreatedAt time.Time `json:"created_at"`
	RemovedAt time.Time `json:"removed_at"`
	PurgeAt   time.Time `json:"purge_at"` // when its key is destroyed
	// Purging is set once its key is being destroyed: it can no longer be
	// brought back.
	Purging bool `json:"purging,omitempty"`
}

// hide takes the volume out of sight for grace: its record moves to the
// removed bucket in one transaction, its key and folder stay. It answers
// the purge time.
func (v *vol) hide(grace time.Duration) (time.Time, error) {
	now := time.Now().UTC()
	r := *v.rec
	r.RemovedAt, r.PurgeAt, r.Mounts = now, now.Add(grace), nil
	err := v.d.cfg.Store.Update(func(tx *store.Tx) error {
		if err := refuseViewed(tx, v.name); err != nil {
			return err
		}
		if err := tx.Delete(v.name); err != nil {
			return err
		}
		return tx.PutRemoved(&r)
	})
	if err != nil {
		return time.Time{}, err
	}
	v.d.gone(v.name)
	return r.PurgeAt, nil
}

// Removed lists the volumes removed within their grace period, by name and
// then removal time.
func (d *Driver) Removed() ([]RemovedVolume, error) {
	all, err := d.cfg.Store.Removed()
	if err != nil {
		return nil, err
	}
	out := make([]RemovedVolume, 0, len(all))
	for _, r := range all {
		out = append(out, RemovedVolume{Name: r.Name, ID: r.ID, CreatedAt: r.CreatedAt, RemovedAt: r.RemovedAt, PurgeAt: r.PurgeAt, Purging: r.Removing})
	}
	slices.SortFunc(out, func(a, b RemovedVolume) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.RemovedAt.Compare(b.RemovedAt)
	})
	return out, nil
}

// Undelete brings back the volume name removed within its grace period,
// under its name, with its data. id picks one of several removed volumes
// of that name ("" when there is one). A volume of that name created
// since must be removed first. Its folder must still open as this
// volume's, as Mount checks it: one gone, or replaced meanwhile (another
// volume's folder copied in, its header edited), is refused and the
// volume stays removed.
func (d *Driver) Undelete(name, id string) error {
	v, unlock, err := d.lockName(name)
	if err != nil {
		return err
	}
	defer unlock()
	// The name's lock keeps the record as found: Create, another Undelete
	// and the purge's marking all take it.
	if err := d.cfg.Store.View(func(tx *store.Tx) (err error) { v.rec, err = findRemoved(tx, name, id); return err }); err != nil {
		return err
	}
	if _, err := v.open(); err != nil {
		return fmt.Errorf("undelete %s: %w", name, err)
	}
	back := v.rec
	err = d.cfg.Store.Update(func(tx *store.Tx) error {
		if err := tx.DeleteRemoved(back.ID); err != nil {
			return err
		}
		r := *back
		r.RemovedAt, r.PurgeAt = time.Time{}, time.Time{}
		return tx.Put(&r)
	})
	if err != nil {
		return err
	}
	d.log.WithFields(logrus.Fields{"volume": name, "id": back.ID}).Info("undeleted volume")
	return nil
}

// findRemoved finds the removed volume that Undelete(name, id) brings
// back.
func findRemoved(tx *store.Tx, name, id string) (*store.Volume, error) {
	switch _, err := tx.Get(name); {
	case err == nil:
		return nil, classed(ErrConflict, "undelete %s: a volume of that name exists (created after the removal); remove it first (docker volume rm %s)", name, name)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	var found []*store.Volume
	if err := tx.ForEachRemoved(func(r *store.Volume) error {
		if r.Name == name && (id == "" || r.ID == id) {
			found = append(found, r)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	switch {
	case len(found) == 0 && id != "":
		return nil, classed(ErrNotFound, "undelete %s: no removed volume of that name has ID %s", name, id)
	case len(found) == 0:
		return nil, classed(ErrNotFound, "undelete %s: no removed volume of that name is in its grace period", name)
	case len(found) > 1:
		ids := make([]string, len(found))
		for i, r := range found {
			ids[i] = r.ID
		}
		return nil, classed(ErrConflict, "undelete %s: %d removed volumes have that name (IDs %s); say which by its ID", name, len(found), strings.Join(ids, ", "))
	case found[0].Removing:
		return nil, classed(ErrConflict, "undelete %s: its grace period is over and its key is being destroyed", name)
	}
	return found[0], nil
}

// purgeEvery is how often purgeLoop looks for removed volumes due: a tenth
// of the grace, within [100 ms, 1 min]. It runs without a grace too, for
// volumes removed while one was set.
func (d *Driver) purgeEvery() time.Duration {
	if d.cfg.RemoveGrace == 0 {
		return time.Minute
	}
	return min(max(d.cfg.RemoveGrace/10, 100*time.Millisecond), time.Minute)
}

// purgeLoop purges the removed volumes that are due, at once and then
// every purgeEvery, until Close.
func (d *Driver) purgeLoop() {
	t := time.NewTicker(d.purgeEvery())
	defer t.Stop()
	for d.purgeDue() {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}

// purgeDue purges every removed volume whose grace has ended, and finishes
// the purges cut short. It answers false once the driver closes.
func (d *Driver) purgeDue() bool {
	removed, err := d.cfg.Store.Removed()
	if err != nil {
		d.log.WithError(err).Error("listing removed volumes to purge")
		return true
	}
	for _, r := range removed {
		if !r.Removing && time.Now().Before(r.PurgeAt) {
			continue
		}
		err := d.purge(r.ID)
		if errors.Is(err, errClosing) {
			return false
		}
		if err != nil {
			d.log.WithError(err).WithFields(logrus.Fields{"volume": r.Name, "id": r.ID}).Error("purging a removed volume")
		}
	}
	return true
}

// purge destroys the key and folder of the removed volume id, then its
// record. Its name's lock is held only while it is marked Removing, which
// Undelete respects; deleting the files then holds no lock, so a new
// volume of that name need not wait for a big folder.
func (d *Driver) purge(id string) error {
	done, err := d.begin()
	if err != nil {
		return err
	}
	defer done()
	d.mu.Lock()
	busy := d.purging[id]
	d.purging[id] = true
	d.mu.Unlock()
	if busy {
		return nil
	}
	defer func() {
		d.mu.Lock()
		delete(d.purging, id)
		d.mu.Unlock()
	}()
	r, err := d.markPurging(id)
	if err != nil || r == nil {
		return err
	}
	if err := d.discard(d.backing(id), r.Name, r.DirID); err != nil {
		return err
	}
	if err := d.cfg.Store.Update(func(tx *store.Tx) error { return tx.DeleteRemoved(id) }); err != nil {
		return err
	}
	d.log.WithFields(logrus.Fields{"volume": r.Name, "id": id}).Info("purged removed volume (key destroyed, folder deleted)")
	return nil
}

// markPurging marks the removed volume id Removing under its name's lock,
// if it is still removed and due; it answers nil when there is nothing to
// purge (undeleted meanwhile, or removed again later).
func (d *Driver) markPurging(id string) (*store.Volume, error) {
	var r *store.Volume
	err := d.cfg.Store.View(func(tx *store.Tx) (err error) { r, err = tx.GetRemoved(id); return err })
	if errors.Is(err, store.ErrNotFound) || err == nil && r.Removing {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := d.lock(r.Name)
	if err != nil {
		return nil, err
	}
	defer v.unlock()
	if err := d.mayDiscard(d.backing(id), r.Name, r.DirID); err != nil {
		return nil, err
	}
	err = d.cfg.Store.Update(func(tx *store.Tx) (err error) {
		if r, err = tx.GetRemoved(id); err != nil {
			return err
		}
		if time.Now().Before(r.PurgeAt) {
			r = nil
			return nil
		}
		if err := d.refuseShared(tx, r); err != nil {
			return err
		}
		r.Removing = true
		return tx.PutRemoved(r)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return r, err
}

// refuseShared refuses to purge a removed volume whose folder a live
// volume records too: that can only come of damage, and shredding it
// would destroy the live volume.
func (d *Driver) refuseShared(tx *store.Tx, r *store.Volume) error {
	return tx.ForEach(func(v *store.Volume) error {
		if v.ID == r.ID {
			return fmt.Errorf("the folder %s is also the live volume %s's; not purged", d.backing(r.ID), v.Name)
		}
		return nil
	})
}
