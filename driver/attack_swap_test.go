package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/internal/testenv"
)

// TestAttackSwappedFolders: the backing folders of volumes A and B are
// swapped on disk (both under the same master key). Mounting A must be
// refused with an error that names the mismatch, and must never show B's
// plaintext: a folder is bound to its volume.
func TestAttackSwappedFolders(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	for _, name := range []string{"alpha", "beta"} {
		e.create(name, nil)
		mp := e.mount(name, "writer")
		if err := os.WriteFile(filepath.Join(mp, "owner.txt"), []byte("plaintext of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		e.unmount(name, "writer")
	}
	a, b := e.d.backing(e.record("alpha").ID), e.d.backing(e.record("beta").ID)
	tmp := a + ".swap"
	for _, mv := range [][2]string{{a, tmp}, {b, a}, {tmp, b}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}

	res, err := e.d.Mount(&volume.MountRequest{Name: "alpha", ID: "c1"})
	if err == nil {
		got, rerr := os.ReadFile(filepath.Join(res.Mountpoint, "owner.txt"))
		if string(got) == "plaintext of beta" {
			t.Fatalf("volume alpha mounted beta's folder and shows beta's plaintext: %q", got)
		}
		t.Fatalf("Mount of alpha over beta's folder succeeded (owner.txt: %q, %v); want a refusal", got, rerr)
	}
	if !strings.Contains(err.Error(), "match") {
		t.Errorf("Mount refused with %q; want an error that names the mismatch", err)
	}
}
