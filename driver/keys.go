package driver

import (
	"errors"
	"fmt"
	"time"

	"github.com/securevol/securevol/crypto"
)

// rlockKeys takes keyMu for reading, waiting at most LockWait: a key
// rotation holds it while it re-wraps every folder, and a request must not
// outwait the engine's timeout (or hold its volume's lock that long).
func (d *Driver) rlockKeys() (func(), error) {
	deadline := time.Now().Add(d.cfg.LockWait)
	for !d.keyMu.TryRLock() {
		if time.Now().After(deadline) {
			return nil, classed(ErrUnavailable, "a master key rotation has been running for over %v; try again when it is done", d.cfg.LockWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d.keyMu.RUnlock, nil
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
