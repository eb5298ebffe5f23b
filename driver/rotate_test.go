package driver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/crypto"
)

func TestRotateKey(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"r1", "r2", "r3"} {
		e.create(n, nil)
	}
	oldKS := crypto.StaticKey{Key: e.key}
	newKey, _ := crypto.RandomMasterKey()
	newKS := crypto.StaticKey{Key: newKey}
	rep, err := e.d.RotateKey(newKS)
	if err != nil || rep.Rewrapped != 3 {
		t.Fatalf("RotateKey = %+v, %v", rep, err)
	}
	for _, n := range []string{"r1", "r2", "r3"} {
		dir := e.d.backing(e.record(n).ID)
		if _, _, err := openVolumeAt(dir, oldKS); !errors.Is(err, crypto.ErrWrongKey) {
			t.Errorf("%s: old key still opens it: %v", n, err)
		}
		if _, _, err := openVolumeAt(dir, newKS); err != nil {
			t.Errorf("%s: new key does not open it: %v", n, err)
		}
	}
	// New volumes are wrapped by the new key; a second rotation to the same
	// key is a no-op that succeeds (resumable).
	e.create("r4", nil)
	if _, _, err := openVolumeAt(e.d.backing(e.record("r4").ID), newKS); err != nil {
		t.Fatalf("volume created after rotation: %v", err)
	}
	if rep, err := e.d.RotateKey(newKS); err != nil || rep.Rewrapped != 4 {
		t.Fatalf("repeated RotateKey = %+v, %v", rep, err)
	}
}

// A rotation that cannot re-wrap some folder keeps both keys usable.
func TestRotateKeyPartialFailure(t *testing.T) {
	e := newEnv(t)
	e.create("good", nil)
	e.create("foreign", nil)
	// "foreign" is under some third key that neither side knows.
	other, _ := crypto.RandomMasterKey()
	fdir := e.d.backing(e.record("foreign").ID)
	if err := rewrap(fdir, crypto.StaticKey{Key: e.key}, crypto.StaticKey{Key: other}); err != nil {
		t.Fatal(err)
	}
	e.create("late", nil)
	newKey, _ := crypto.RandomMasterKey()
	rep, err := e.d.RotateKey(crypto.StaticKey{Key: newKey})
	if err == nil || len(rep.Failed) != 1 || rep.Rewrapped != 2 {
		t.Fatalf("RotateKey = %+v, %v", rep, err)
	}
	e.d.keyMu.RLock()
	n := len(e.d.keys)
	e.d.keyMu.RUnlock()
	if n != 2 {
		t.Fatalf("after a partial rotation the driver holds %d keys, want 2", n)
	}
}

// A key rotation holds the key lock while it re-wraps every folder, which
// takes long with many volumes or a slow disk. Creates and Mounts wait for
// it at most LockWait, then answer a clear error: never past the engine's
// timeout, and never holding a volume's lock indefinitely.
func TestRequestsWaitBoundedForRotation(t *testing.T) {
	g := newGatedMounter()
	close(g.release)
	e := newEnv(t, func(c *Config) { c.LockWait = 200 * time.Millisecond; c.Mounter = g.mount })
	e.create("vol", nil)
	e.d.keyMu.Lock() // a rotation in progress
	released := false
	defer func() {
		if !released {
			e.d.keyMu.Unlock()
		}
	}()
	calls := []struct {
		name string
		call func() error
	}{
		{"create", func() error { return e.d.Create(&volume.CreateRequest{Name: "new"}) }},
		{"mount", func() error {
			_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "m"})
			return err
		}},
		{"remove", func() error { return e.d.Remove(&volume.RemoveRequest{Name: "vol"}) }},
	}
	for _, c := range calls {
		name, call := c.name, c.call
		res := make(chan error, 1)
		go func() { res <- call() }()
		select {
		case err := <-res:
			if err == nil || !strings.Contains(err.Error(), "key rotation") {
				t.Errorf("%s during a rotation = %v, want an error about the rotation", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waits for the rotation without bound", name)
		}
	}
	e.d.keyMu.Unlock()
	released = true
	e.create("new", nil)
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); err != nil {
		t.Fatalf("Remove after the rotation: %v", err)
	}
}
