package driver

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/crypto"
)

// Undelete answers "back" only for a folder that is still the removed
// volume's: one replaced meanwhile by a copy of another volume's folder
// (its authenticated header names that volume), one whose header was
// edited, or one that is gone, is refused, and the volume stays removed
// (so Undelete can be tried again once the folder is restored).
func TestAttackUndeleteForeignFolder(t *testing.T) {
	cases := []struct {
		name   string
		damage func(e *env, dir, other string)
	}{
		{"another volume's folder copied in", func(e *env, dir, other string) {
			mustDo(t, os.RemoveAll(dir))
			if out, err := exec.Command("cp", "-a", other, dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		}},
		{"header renamed", func(e *env, dir, _ string) { editHeader(t, dir, `"name": "vol"`, `"name": "lov"`) }},
		{"folder gone", func(e *env, dir, _ string) { mustDo(t, os.RemoveAll(dir)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, withGrace(time.Hour))
			e.create("vol", nil)
			e.create("other", nil)
			id := e.record("vol").ID
			e.remove("vol")
			c.damage(e, e.d.backing(id), e.d.backing(e.record("other").ID))
			if err := e.d.Undelete("vol", ""); err == nil {
				t.Fatal("Undelete brought back a volume whose folder is not its own")
			}
			if _, err := e.d.Get(&volume.GetRequest{Name: "vol"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after a refused Undelete = %v", err)
			}
			if r := e.removed(); len(r) != 1 || r[0].ID != id {
				t.Fatalf("Removed after a refused Undelete = %+v", r)
			}
		})
	}
}

// swapFolders exchanges two backing folders on disk, as someone who can
// write the state directory may, by mistake (a backup restored into the
// wrong folder) or not.
func swapFolders(t *testing.T, a, b string) {
	t.Helper()
	mustDo(t, os.Rename(a, a+".swap"))
	mustDo(t, os.Rename(b, a))
	mustDo(t, os.Rename(a+".swap", b))
}

// A swap of two folders is refused, never made final (TestSwappedFolders
// Refused): swapped back, both volumes work. So removing a volume whose
// folder now holds another volume's (its header opens under the daemon's
// key and names that other volume) must not destroy that other volume's
// key: not by a Remove, nor by the purge at the end of a grace.
func TestAttackRemoveSwappedFolder(t *testing.T) {
	for _, grace := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run("grace "+grace.String(), func(t *testing.T) {
			e := newEnv(t, withGrace(grace))
			e.create("gone", nil)
			e.create("live", nil)
			gone, live := e.d.backing(e.record("gone").ID), e.d.backing(e.record("live").ID)
			swapFolders(t, gone, live)
			if grace == 0 {
				if err := e.d.Remove(&volume.RemoveRequest{Name: "gone"}); err == nil {
					t.Error("Remove of a volume whose folder holds another volume's succeeded")
				}
				// Refused before anything changed: not marked as removing.
				if e.record("gone").Removing {
					t.Error("the refused Remove left the volume marked as removing (its key destroyed)")
				}
			} else {
				e.remove("gone") // hidden: nothing is destroyed yet
				time.Sleep(3 * grace)
				e.d.purgeDue()
				if r := e.removed(); len(r) != 1 || r[0].Purging {
					t.Errorf("after the refused purge: %+v", r)
				}
			}
			if _, _, err := openVolumeAt(gone, crypto.StaticKey{Key: e.key}); err != nil {
				t.Fatalf("the volume live lost its key to the removal of gone: %v", err)
			}
			swapFolders(t, gone, live)
			if _, err := e.d.Get(&volume.GetRequest{Name: "live"}); err != nil {
				t.Fatal(err)
			}
			if h, err := readHeader(live); err != nil || h.Name != "live" {
				t.Fatalf("live's folder swapped back: %+v, %v", h, err)
			}
		})
	}
}
