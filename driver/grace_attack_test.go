package driver

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
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

// With a grace, two folders carry one authenticated name: the removed
// volume's and the new volume's that took its name. Swapped on disk, the
// name check passes both ways, so the folder must also be bound to its
// record by the header's directory ID: else Mount shows the removed
// volume's old data as the live volume, and the purge of the removed one
// destroys the live one's key.
func TestAttackSwapWithRemovedNamesake(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t, withGrace(time.Hour))
	write := func(what string) {
		mp := e.mount("db", "w")
		mustDo(t, os.WriteFile(filepath.Join(mp, "data"), []byte(what), 0o644))
		e.unmount("db", "w")
	}
	e.create("db", nil)
	write("old")
	oldID := e.record("db").ID
	e.remove("db")
	e.create("db", nil)
	write("current")
	newID := e.record("db").ID
	swapFolders(t, e.d.backing(oldID), e.d.backing(newID))

	res, err := e.d.Mount(&volume.MountRequest{Name: "db", ID: "c"})
	if err == nil {
		b, _ := os.ReadFile(filepath.Join(res.Mountpoint, "data"))
		t.Errorf("Mount of db over the removed namesake's folder succeeded, showing %q", b)
		e.unmount("db", "c")
	}
	// The removed one's grace ends: its purge must spare the folder that
	// holds the live volume.
	mustDo(t, e.st.Update(func(tx *store.Tx) error {
		r, err := tx.GetRemoved(oldID)
		if err != nil {
			return err
		}
		r.PurgeAt = time.Now().Add(-time.Second)
		return tx.PutRemoved(r)
	}))
	e.d.purgeDue()
	swapFolders(t, e.d.backing(oldID), e.d.backing(newID))
	mp, err := e.d.Mount(&volume.MountRequest{Name: "db", ID: "c"})
	if err != nil {
		t.Fatalf("the live volume, swapped back: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mp.Mountpoint, "data")); err != nil || string(b) != "current" {
		t.Fatalf("the live volume's data: %q, %v", b, err)
	}
	e.unmount("db", "c")
}

// A record written before DirID existed is bound to its folder at the
// next start, so a namesake swapped in later is refused too.
func TestDirIDBoundAtStart(t *testing.T) {
	e := newEnv(t)
	e.create("db", nil)
	rec := e.record("db")
	want := rec.DirID
	if want == "" {
		t.Fatal("Create recorded no directory ID")
	}
	rec.DirID = ""
	mustDo(t, e.st.Update(func(tx *store.Tx) error { return tx.Put(rec) }))
	e.close()
	if rep := e.open(); len(rep.Problems) != 0 {
		t.Fatalf("start: %q", rep.Problems)
	}
	if got := e.record("db").DirID; got != want {
		t.Fatalf("DirID after start %q, want %q", got, want)
	}
}
