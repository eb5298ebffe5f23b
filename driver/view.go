package driver

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

// Read-only views (docker volume create -o readonly-of=SRC VIEW). The
// engine does not tell a plugin whether a container mounts a volume :ro,
// so read-only access is a volume of its own: a record that names its
// source and the source's folder, with no folder, header or key of its
// own. Mounting it mounts the source's folder read-only (the kernel's
// "ro", and cryptfs refusing every change: cryptfs.Options.ReadOnly).
//
// A view and its source are never mounted at once: the source's mount
// writes the folder behind the view's long-lived kernel caches. In
// cluster mode a view's mount takes a read claim on the source in etcd,
// which many nodes may hold at once but none while a node holds the
// source's write claim (cluster.Node.ReadClaim); on a single host the same
// rule holds in memory (localHold). A source with views cannot be removed;
// removing a view deletes its record and nothing else.

// OptReadOnlyOf is the create option that makes a view of a volume.
const OptReadOnlyOf = "readonly-of"

// createView makes v a view of the volume src; a view of src by that name
// already is a no-op. The source is checked and the view written in one
// transaction, so a removal of the source (which looks for views in its
// own) cannot slip in between.
func (v *vol) createView(src string) error {
	d := v.d
	if err := checkName(src); err != nil {
		return err
	}
	if src == v.name {
		return classed(ErrInvalid, "a volume cannot be a view of itself")
	}
	id, err := newID()
	if err != nil {
		return err
	}
	made := false
	err = d.cfg.Store.Update(func(tx *store.Tx) error {
		made = false
		switch old, err := tx.Get(v.name); {
		case err == nil && old.View != nil && old.View.Of == src:
			return nil
		case err == nil:
			return classed(ErrConflict, "a volume of that name exists and is not a view of %s; remove it first", src)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		s, err := tx.Get(src)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return classed(ErrNotFound, "%s=%s: no such volume", OptReadOnlyOf, src)
		case err != nil:
			return err
		case s.View != nil:
			return classed(ErrInvalid, "%s is itself a view (of %s); make the view of %s", src, s.View.Of, s.View.Of)
		case s.Removing:
			return classed(ErrConflict, "%s is being removed", src)
		case s.DirID == "":
			return classed(ErrConflict, "the folder of %s was never opened by this release; mount it once first", src)
		}
		rec := &store.Volume{ID: id, Name: v.name, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: s.Options,
			View: &store.View{Of: src, ID: s.ID, DirID: s.DirID}}
		rec.Options.Size = 0
		made = true
		return tx.Put(rec)
	})
	if err != nil {
		return err
	}
	if made {
		d.log.WithFields(logrus.Fields{"volume": v.name, "of": src}).Info("created a read-only view")
	}
	return nil
}

// viewsOf lists the views of the volume name, in name order.
func viewsOf(tx *store.Tx, name string) ([]string, error) {
	var out []string
	err := tx.ForEach(func(r *store.Volume) error {
		if r.View != nil && r.View.Of == name {
			out = append(out, r.Name)
		}
		return nil
	})
	return out, err
}

// refuseViewed refuses to remove the volume name while views of it exist.
func refuseViewed(tx *store.Tx, name string) error {
	views, err := viewsOf(tx, name)
	if err != nil {
		return err
	}
	if len(views) > 0 {
		return classed(ErrConflict, "volume %s has read-only views (%s); remove them first", name, strings.Join(views, ", "))
	}
	return nil
}

// source loads the view's source record and checks that it is still the
// volume the view was made of: same folder, same directory ID.
func (v *vol) source() (*store.Volume, error) { return v.d.sourceOf(v.rec) }

// sourceOf is vol.source for the view's record rec.
func (d *Driver) sourceOf(rec *store.Volume) (*store.Volume, error) {
	vw := rec.View
	s, err := d.cfg.Store.Get(vw.Of)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, classed(ErrConflict, "the view's source volume %s is gone; remove the view", vw.Of)
	case err != nil:
		return nil, err
	case s.View != nil || s.ID != vw.ID || s.DirID != vw.DirID:
		return nil, classed(ErrConflict, "the volume %s is not the one the view was made of (folder %s, directory ID %s; now %s, %s): it was replaced; remove the view and create it again", vw.Of, vw.ID, vw.DirID, s.ID, s.DirID)
	case s.Removing:
		return nil, classed(ErrConflict, "the view's source volume %s is being removed", vw.Of)
	}
	return s, nil
}

// attachView mounts the view's source folder read-only, under a read
// claim on the source.
func (v *vol) attachView() error {
	d := v.d
	s, err := v.source()
	if err != nil {
		return err
	}
	var claim hold
	if d.clustered() {
		claim, err = v.readClaim()
	} else {
		claim, err = d.holdLocally(s.Name, v.name)
	}
	if err != nil {
		return err
	}
	dir := d.backing(s.ID)
	keys, err := d.openView(dir, s)
	if err == nil {
		err = v.attachUnder(claim, dir, keys, MountOptions{Fence: claim.Fence(), ReadOnly: true})
	}
	if err != nil {
		d.release(v.name, &liveMount{claim: claim})
		return err
	}
	return nil
}

// openView opens the source s's folder dir for a view: its header must
// open and name s with s's directory ID, as vol.verify checks for s's own
// mounts. A format 1 folder is refused: upgrading it would write, which
// only s's own mount may.
func (d *Driver) openView(dir string, s *store.Volume) (*crypto.VolumeKeys, error) {
	h, err := readHeader(dir)
	if err != nil {
		return nil, err
	}
	if !h.Authenticated() {
		return nil, classed(ErrConflict, "the folder of %s is still format %d; mount %s once to upgrade it", s.Name, h.Format, s.Name)
	}
	unlock, err := d.rlockKeys()
	if err != nil {
		return nil, err
	}
	defer unlock()
	_, keys, err := d.open(h)
	if err != nil {
		return nil, err
	}
	if h.Name != s.Name || h.ID != s.DirID {
		return nil, fmt.Errorf("%w: %s holds the volume %q with directory ID %s, not %q with %s; refusing it", errWrongFolder, dir, h.Name, h.ID, s.Name, s.DirID)
	}
	return keys, nil
}

// removeView deletes the view's record, and nothing else: its source's
// folder and key stay as they are. In cluster mode a view that a node
// mounts is refused.
func (v *vol) removeView() error {
	d := v.d
	if d.clustered() {
		rs, err := d.cfg.Cluster.Readers(v.rec.View.Of, v.name)
		if err != nil {
			return classed(ErrUnavailable, "cluster: %w", err)
		}
		if len(rs) > 0 {
			nodes := make([]string, len(rs))
			for i, r := range rs {
				nodes[i] = r.Node
			}
			return classed(ErrConflict, "the view is mounted on %s; stop the containers or service tasks that use it there", strings.Join(nodes, ", "))
		}
	}
	err := d.cfg.Store.Update(func(tx *store.Tx) error {
		r, err := tx.Get(v.name)
		if err != nil {
			return err
		}
		if r.View == nil {
			return classed(ErrConflict, "%s is no longer a view", v.name)
		}
		return tx.Delete(v.name)
	})
	if err != nil {
		return err
	}
	d.gone(v.name)
	return nil
}

// viewStatus is Status for a view.
func (d *Driver) viewStatus(v *store.Volume, st map[string]any) {
	st["view"] = "read-only view of " + v.View.Of
	st["view_of"] = v.View.Of
	st["source_id"] = v.View.ID
	delete(st, "id")
	state := "ok"
	if t := d.getTrouble(v.Name); t != "" {
		state = t
	} else if _, err := d.sourceOf(v); err != nil {
		state = "error: " + err.Error()
	}
	st["state"] = state
}

// localHold is a claim on a folder on a single host (Config.Cluster
// unset): the volume's own mount writes it, or views read it, never both.
type localHold struct {
	d    *Driver
	src  string
	view string // "" for the volume's own mount
}

// holdUse is who mounts a volume's folder on this host.
type holdUse struct {
	writer  bool
	readers map[string]bool // view names
}

// holdLocally claims the folder of the volume src: for writing (view "")
// or for reading through view. It fails at once, naming the holders, if
// the other kind holds it.
func (d *Driver) holdLocally(src, view string) (*localHold, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.holds[src]
	if u == nil {
		u = &holdUse{readers: map[string]bool{}}
		d.holds[src] = u
	}
	switch {
	case view == "" && len(u.readers) > 0:
		return nil, classed(ErrConflict, "volume %s is mounted read-only through the views %s; stop the containers that use them first",
			src, strings.Join(slices.Sorted(maps.Keys(u.readers)), ", "))
	case view != "" && u.writer:
		return nil, classed(ErrConflict, "volume %s is mounted read-write; stop the containers that use it first", src)
	case view == "":
		u.writer = true
	default:
		u.readers[view] = true
	}
	return &localHold{d: d, src: src, view: view}, nil
}

// Release lets go of the hold.
func (h *localHold) Release() error {
	d := h.d
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.holds[h.src]
	if u == nil {
		return nil
	}
	if h.view == "" {
		u.writer = false
	} else {
		delete(u.readers, h.view)
	}
	if !u.writer && len(u.readers) == 0 {
		delete(d.holds, h.src)
	}
	return nil
}

// Fence is nil: a single host's folders are its own.
func (h *localHold) Fence() *backing.Fence { return nil }
