package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/internal/testenv"
)

// Release drops one mount ID's references, or all; the volume is
// unmounted once none remain, and can then be removed.
func TestRelease(t *testing.T) {
	g := newGatedMounter()
	close(g.release)
	e := newEnv(t, func(c *Config) { c.Mounter = g.mount })
	e.create("vol", nil)
	for _, id := range []string{"c1", "c1", "c2", "lost"} {
		if _, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		id       string
		released int
		left     map[string]int
		mounted  bool
		class    error
	}{
		{"lost", 1, map[string]int{"c1": 2, "c2": 1}, true, nil},
		{"lost", 0, map[string]int{"c1": 2, "c2": 1}, true, ErrNotFound},
		{"c1", 2, map[string]int{"c2": 1}, true, nil},
		{"", 1, nil, false, nil},
		{"", 0, nil, false, nil},
	}
	for i, s := range steps {
		n, err := e.d.Release("vol", s.id)
		if n != s.released || !errors.Is(err, s.class) || (s.class == nil) != (err == nil) {
			t.Fatalf("step %d: Release(vol, %q) = %d, %v; want %d, class %v", i, s.id, n, err, s.released, s.class)
		}
		if err != nil && !strings.Contains(err.Error(), "c1, c2") {
			t.Errorf("step %d: the error does not list the IDs holding references: %v", i, err)
		}
		got := e.record("vol").Mounts
		if len(got) != len(s.left) {
			t.Fatalf("step %d: references %v, want %v", i, got, s.left)
		}
		for id, c := range s.left {
			if got[id] != c {
				t.Fatalf("step %d: references %v, want %v", i, got, s.left)
			}
		}
		if mounted := e.d.Mounted() == 1; mounted != s.mounted {
			t.Fatalf("step %d: mounted %v, want %v", i, mounted, s.mounted)
		}
	}
	if !g.made[0].unmounted() {
		t.Fatal("the mount was not unmounted when the last reference went")
	}
	if _, err := e.d.Release("nope", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Release of an unknown volume = %v", err)
	}
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); err != nil {
		t.Fatalf("Remove after Release: %v", err)
	}
}

// The case from the field: a Mount whose answer the engine never got
// leaves a reference, and the volume is mounted and unremovable until the
// reference is released; the data survives.
func TestReleaseLostMountAnswer(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("vol", nil)
	mp := e.mount("vol", "lost")
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Remove with a stale reference = %v", err)
	}
	if n, err := e.d.Release("vol", ""); n != 1 || err != nil {
		t.Fatalf("Release = %d, %v", n, err)
	}
	if mounted(t, mp) {
		t.Fatal("still mounted after releasing the last reference")
	}
	mp = e.mount("vol", "c2")
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "x" {
		t.Fatalf("data after Release: %q %v", b, err)
	}
}
