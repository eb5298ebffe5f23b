package driver

import (
	"fmt"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/store"
)

// sizeWalkLimit bounds the entries Get walks to sum a volume's backing
// size (a few milliseconds): the engine calls Get for every volume at its
// start, and volumes with millions of files must not make that slow.
// Beyond it the size shown is a lower bound.
const sizeWalkLimit = 5000

// status is what `docker volume inspect` shows as Status: facts only, no
// key material (not even wrapped).
func (d *Driver) status(v *store.Volume) map[string]interface{} {
	st := map[string]interface{}{
		"id":         v.ID,
		"root":       formatRoot(v.Options),
		"mounts":     references(v),
		"mounted":    d.live(v.Name) != nil,
		"master_key": d.cfg.KeyKind,
	}
	if v.View != nil {
		d.viewStatus(v, st)
		return st
	}
	state := "ok"
	if v.Removing {
		state = "removing: key destroyed, deleting files; finish with docker volume rm"
	} else if t := d.getTrouble(v.Name); t != "" {
		state = t
	}
	dir := d.backing(v.ID)
	h, err := readHeader(dir)
	switch {
	case err == nil:
		st["format"] = h.Format
		st["cipher"] = h.Content
		st["names"] = h.Names
		if h.KDF != nil {
			st["kdf"] = h.KDF.Algorithm
		}
	case !v.Removing && state == "ok":
		state = "error: " + err.Error()
	}
	st["state"] = state
	if limit := v.Options.Size; limit > 0 {
		st["size_limit"] = humanBytes(limit)
		st["size_limit_bytes"] = limit
	}
	if size, complete, err := d.used(v.Name, dir); err == nil {
		if complete {
			st["backing_size"] = humanBytes(size)
		} else {
			st["backing_size"] = "at least " + humanBytes(size)
		}
		st["backing_bytes"] = size
	}
	return st
}

// UsedBytes is what the volume name's backing folder holds, counted as a
// size limit counts it (cryptfs.Quota), for metrics (metrics.Options):
// live and free while it is mounted with a limit, else from a walk of at
// most sizeWalkLimit entries (a few milliseconds); ok is false if that
// walk could not finish, or for an unknown volume.
func (d *Driver) UsedBytes(name string) (bytes int64, ok bool) {
	v, err := d.cfg.Store.Get(name)
	if err != nil {
		return 0, false
	}
	size, complete, err := d.used(name, d.backing(v.ID))
	return size, err == nil && complete
}

// LimitBytes is the volume name's size limit; ok is false if it has none.
func (d *Driver) LimitBytes(name string) (bytes int64, ok bool) {
	v, err := d.cfg.Store.Get(name)
	if err != nil || v.Options.Size == 0 {
		return 0, false
	}
	return v.Options.Size, true
}

// used is what a volume's backing folder holds, counted as a size limit
// counts it: live from the mount where it keeps count (a volume with a
// limit, mounted), else by walking the folder dir (backingSize).
func (d *Driver) used(name, dir string) (size int64, complete bool, err error) {
	if lm := d.live(name); lm != nil {
		if c, ok := lm.m.(usageCounter); ok {
			return c.Used(), true, nil
		}
	}
	return backingSize(dir)
}

// backingSize is what the backing folder dir holds (backing.Usage),
// stopping after sizeWalkLimit entries (complete is then false).
func backingSize(dir string) (size int64, complete bool, err error) {
	err = backing.WithRoot(dir, func(root *backing.Dir) error {
		size, complete, err = backing.Usage(root, sizeWalkLimit)
		return err
	})
	return size, complete, err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// references is the number of Mount calls not yet matched by an Unmount.
func references(v *store.Volume) int {
	n := 0
	for _, c := range v.Mounts {
		n += c
	}
	return n
}
