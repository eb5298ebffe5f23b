package driver

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// RotateReport says what a key rotation did.
type RotateReport struct {
	Rewrapped int      // folders whose key is now wrapped by the new master key
	Failed    []string // folders that could not be re-wrapped, with the reason
}

// RotateKey re-wraps every backing folder's volume key under newKS (the
// data is not re-encrypted). Each folder changes in one atomic rename and a
// folder already under newKS is skipped, so an interrupted rotation is
// finished by running it again. While it runs, and after a partial
// failure, the driver opens volumes with the new key or the old ones; only
// a complete rotation drops the old ones. Creates and mounts wait for it.
func (d *Driver) RotateKey(newKS crypto.KeySource) (*RotateReport, error) {
	d.keyMu.Lock()
	defer d.keyMu.Unlock()
	var old []crypto.KeySource
	for _, ks := range d.keys {
		if ks != newKS {
			old = append(old, ks)
		}
	}
	d.keys = append([]crypto.KeySource{newKS}, old...)

	ents, err := os.ReadDir(d.volDir)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	rep := &RotateReport{}
	for _, e := range ents {
		if !e.IsDir() || isPartial(e.Name()) {
			continue // an import wraps its folder's key as it ends
		}
		dir := d.backing(e.Name())
		err := rewrapAny(dir, old, newKS)
		switch {
		case errors.Is(err, backing.ErrNoHeader):
			// A folder without key (removed, or a create cut short) has
			// nothing to re-wrap.
		case err != nil:
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", dir, err))
		default:
			rep.Rewrapped++
		}
	}
	if len(rep.Failed) > 0 {
		n := min(len(rep.Failed), 5)
		return rep, fmt.Errorf("rotate: %d of %d folders could not be re-wrapped (both keys stay in use; fix and rotate again): %s",
			len(rep.Failed), len(rep.Failed)+rep.Rewrapped, strings.Join(rep.Failed[:n], "; "))
	}
	d.keys = []crypto.KeySource{newKS}
	d.log.WithField("volumes", rep.Rewrapped).Info("master key rotated")
	return rep, nil
}

// rewrapAny re-wraps dir from whichever old key opens it.
func rewrapAny(dir string, old []crypto.KeySource, newKS crypto.KeySource) error {
	if len(old) == 0 {
		// Only the new key is known: Rewrap succeeds iff it opens dir.
		return rewrap(dir, newKS, newKS)
	}
	var first error
	for _, ks := range old {
		err := rewrap(dir, ks, newKS)
		if err == nil || errors.Is(err, backing.ErrNoHeader) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func rewrap(dir string, oldKS, newKS crypto.KeySource) error {
	err := backing.WithRoot(dir, func(root *backing.Dir) error { return backing.Rewrap(root, oldKS, newKS) })
	if errors.Is(err, unix.ENOENT) {
		err = backing.ErrNoHeader
	}
	return err
}
