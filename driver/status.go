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
		"root":       formatOptions(v.Options),
		"mounts":     references(v),
		"mounted":    d.live(v.Name) != nil,
		"master_key": d.cfg.KeyKind,
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
	if size, complete, err := backingSize(dir); err == nil {
		if complete {
			st["backing_size"] = humanBytes(size)
		} else {
			st["backing_size"] = "at least " + humanBytes(size)
		}
		st["backing_bytes"] = size
	}
	return st
}

// backingSize sums the sizes of the files in the backing folder dir,
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
