package driver

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

func withGrace(g time.Duration) envOpt { return func(c *Config) { c.RemoveGrace = g } }

func (e *env) remove(name string) {
	e.t.Helper()
	if err := e.d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) removed() []RemovedVolume {
	e.t.Helper()
	r, err := e.d.Removed()
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// hasKey reports whether the folder id still holds its key.
func (e *env) hasKey(id string) bool {
	_, err := readHeader(e.d.backing(id))
	return err == nil
}

// waitPurged waits until no removed volume is left (the purge loop runs
// every 100 ms with a short grace).
func (e *env) waitPurged() {
	e.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(e.removed()) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("not purged: %+v", e.removed())
		}
	}
}

// forgetfulMetrics notes which volumes the driver said were removed.
type forgetfulMetrics struct{ removed []string }

func (m *forgetfulMetrics) Volume(string) cryptfs.Observer { return nil }
func (m *forgetfulMetrics) Remove(name string)             { m.removed = append(m.removed, name) }

// With a grace, Remove hides the volume at once (the engine is told "no
// such volume", the metrics forget it) and keeps its key; Undelete brings
// it back as it was.
func TestRemoveWithGraceThenUndelete(t *testing.T) {
	m := &forgetfulMetrics{}
	e := newEnv(t, withGrace(time.Hour), func(c *Config) { c.Metrics = m })
	e.create("vol", map[string]string{"uid": "7"})
	e.create("other", nil)
	rec := e.record("vol")
	before := time.Now()
	e.remove("vol")

	if _, err := e.d.Get(&volume.GetRequest{Name: "vol"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("Get of a removed volume = %v", err)
	}
	if got := listNames(t, e.d); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("List = %v", got)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "m"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Mount of a removed volume = %v", err)
	}
	r := e.removed()
	if len(r) != 1 || r[0].Name != "vol" || r[0].ID != rec.ID || r[0].Purging ||
		r[0].RemovedAt.Before(before.Add(-time.Second)) || r[0].PurgeAt.Sub(r[0].RemovedAt) != time.Hour {
		t.Fatalf("Removed = %+v", r)
	}
	if !e.hasKey(rec.ID) {
		t.Fatal("the key of a volume in its grace period is gone")
	}
	if !slices.Equal(m.removed, []string{"vol"}) {
		t.Fatalf("metrics told of removals %v", m.removed)
	}

	if err := e.d.Undelete("vol", ""); err != nil {
		t.Fatal(err)
	}
	got := e.record("vol")
	if got.ID != rec.ID || got.Options != rec.Options || !got.CreatedAt.Equal(rec.CreatedAt) || !got.RemovedAt.IsZero() {
		t.Fatalf("undeleted %+v, want %+v", got, rec)
	}
	if len(e.removed()) != 0 {
		t.Fatalf("still listed as removed: %+v", e.removed())
	}
	if err := e.d.Undelete("vol", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("Undelete of a live volume = %v", err)
	}
	if err := e.d.Undelete("never", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Undelete of an unknown name = %v", err)
	}
}

// The name is free during the grace (compose down -v, then up); the old
// volume comes back once it is free again, by its ID if several wait.
func TestGraceNameReuse(t *testing.T) {
	e := newEnv(t, withGrace(time.Hour))
	e.create("db", nil)
	first := e.record("db").ID
	e.remove("db")
	e.create("db", nil)
	second := e.record("db").ID
	if second == first {
		t.Fatal("the new volume took the removed one's folder")
	}
	if err := e.d.Undelete("db", ""); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "docker volume rm db") {
		t.Fatalf("Undelete while the name is taken = %v", err)
	}
	e.remove("db")
	err := e.d.Undelete("db", "")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), second) {
		t.Fatalf("Undelete of an ambiguous name = %v", err)
	}
	if err := e.d.Undelete("db", "0123"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Undelete with a wrong ID = %v", err)
	}
	if err := e.d.Undelete("db", first); err != nil {
		t.Fatal(err)
	}
	if got := e.record("db").ID; got != first {
		t.Fatalf("undeleted %s, want %s", got, first)
	}
	if r := e.removed(); len(r) != 1 || r[0].ID != second {
		t.Fatalf("Removed = %+v", r)
	}
}

// When the grace ends the key is destroyed and the folder deleted, and
// nothing can bring the volume back.
func TestGracePurge(t *testing.T) {
	e := newEnv(t, withGrace(200*time.Millisecond))
	e.create("vol", nil)
	id := e.record("vol").ID
	e.remove("vol")
	if !e.hasKey(id) {
		t.Fatal("key destroyed before the grace ended")
	}
	e.waitPurged()
	if _, err := os.Stat(e.d.backing(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder after the purge: %v", err)
	}
	if err := e.d.Undelete("vol", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Undelete after the purge = %v", err)
	}
}

// Start-up leaves a volume in its grace alone (not recovered from its
// folder, not mounted, its promised purge time kept even if the daemon now
// runs without a grace), and purges the ones due, finishing a purge cut
// short.
func TestGraceAcrossRestart(t *testing.T) {
	e := newEnv(t, withGrace(time.Hour))
	for _, n := range []string{"kept", "due", "halfway"} {
		e.create(n, nil)
	}
	ids := map[string]string{}
	for _, n := range []string{"kept", "due", "halfway"} {
		ids[n] = e.record(n).ID
		e.remove(n)
	}
	past := time.Now().Add(-time.Minute)
	err := e.st.Update(func(tx *store.Tx) error {
		for _, n := range []string{"kept", "due", "halfway"} {
			r, err := tx.GetRemoved(ids[n])
			if err != nil {
				return err
			}
			switch n {
			case "kept":
				r.Mounts = map[string]int{"c1": 1} // must not be mounted again
			case "due":
				r.PurgeAt = past
			case "halfway":
				r.Removing = true
			}
			if err := tx.PutRemoved(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := destroyKey(e.d.backing(ids["halfway"]), nil); err != nil {
		t.Fatal(err)
	}
	e.close()

	g := newGatedMounter()
	close(g.release)
	rep := e.open(withGrace(0), func(c *Config) { c.Mounter = g.mount })
	if len(rep.Recovered) != 0 || len(rep.Problems) != 0 || rep.Remounted != 0 || rep.InGrace != 3 {
		t.Fatalf("start report %+v", rep)
	}
	for deadline := time.Now().Add(5 * time.Second); len(e.removed()) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("due volumes not purged: %+v", e.removed())
		}
	}
	if r := e.removed(); r[0].Name != "kept" {
		t.Fatalf("Removed = %+v", r)
	}
	for n, id := range ids {
		_, err := os.Stat(e.d.backing(id))
		if gone := errors.Is(err, os.ErrNotExist); gone != (n != "kept") {
			t.Errorf("%s: folder gone %v (%v)", n, gone, err)
		}
	}
	if !e.hasKey(ids["kept"]) || e.d.Mounted() != 0 || len(listNames(t, e.d)) != 0 {
		t.Fatalf("kept: key %v, mounted %d, listed %v", e.hasKey(ids["kept"]), e.d.Mounted(), listNames(t, e.d))
	}
	if err := e.d.Undelete("kept", ""); err != nil {
		t.Fatal(err)
	}
}

// A purge never destroys a folder that a live volume records (damage), and
// a key rotation re-wraps the folders of volumes in their grace, so they
// open after Undelete.
func TestGraceGuards(t *testing.T) {
	logs := &logCapture{}
	e := newEnv(t, withGrace(time.Hour), logs.opt())
	e.create("live", nil)
	e.create("gone", nil)
	live := e.record("live")
	e.remove("gone")

	newKey, _ := crypto.RandomMasterKey()
	newKS := crypto.StaticKey{Key: newKey}
	if _, err := e.d.RotateKey(newKS); err != nil {
		t.Fatal(err)
	}
	gone := e.removed()[0].ID
	if _, _, err := openVolumeAt(e.d.backing(gone), newKS); err != nil {
		t.Fatalf("a volume in its grace was not re-wrapped: %v", err)
	}

	// Damage: a removed record, due, pointing at the live volume's folder.
	shared := *live
	shared.Name, shared.RemovedAt, shared.PurgeAt = "ghost", time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	if err := e.st.Update(func(tx *store.Tx) error { return tx.PutRemoved(&shared) }); err != nil {
		t.Fatal(err)
	}
	e.d.purgeDue()
	if !e.hasKey(live.ID) {
		t.Fatal("a purge destroyed a live volume's key")
	}
	if l := logs.String(); !strings.Contains(l, "not purged") && !strings.Contains(l, "its key is not destroyed") {
		t.Errorf("the refusal was not logged: %s", logs.String())
	}
}
