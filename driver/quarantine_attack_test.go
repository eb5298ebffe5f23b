package driver

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"

	"github.com/securevol/securevol/crypto"
)

// writeRemovedRecord puts raw bytes under key in the removed bucket, behind
// the store's back. The database must be closed.
func (e *env) writeRemovedRecord(key string, raw []byte) {
	e.t.Helper()
	db, err := bolt.Open(filepath.Join(e.stateDir, "securevol.db"), 0o600, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("removed")).Put([]byte(key), raw) }); err != nil {
		e.t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A record that decodes cleanly (its name is its key, its ID one folder
// name) but claims another volume's folder is damage too: whatever it
// says (a removal cut short, a purge cut short, a live volume to remove
// later), it must never destroy the other volume's key. The folder's
// authenticated header says whose it is.
func TestAttackRecordClaimsAnotherVolumesFolder(t *testing.T) {
	cases := []struct {
		name  string
		plant func(e *env, id string)
		then  func(e *env) // what a user might do next
	}{
		{"live record, removal cut short", func(e *env, id string) {
			e.writeRecord("evil", mustJSON(t, map[string]any{"id": id, "name": "evil", "removing": true}))
		}, nil},
		{"removed record, purge cut short", func(e *env, id string) {
			past := time.Now().Add(-time.Hour).UTC()
			e.writeRemovedRecord(id, mustJSON(t, map[string]any{"id": id, "name": "evil", "removing": true, "removed_at": past, "purge_at": past}))
		}, func(e *env) { e.d.purgeDue() }},
		{"live record, removed by the user", func(e *env, id string) {
			e.writeRecord("evil", mustJSON(t, map[string]any{"id": id, "name": "evil"}))
		}, func(e *env) { e.d.Remove(&volume.RemoveRequest{Name: "evil"}) }},
		{"removed record, undeleted then removed", func(e *env, id string) {
			now := time.Now().UTC()
			e.writeRemovedRecord(id, mustJSON(t, map[string]any{"id": id, "name": "evil", "removed_at": now, "purge_at": now.Add(time.Hour)}))
		}, func(e *env) {
			e.d.Undelete("evil", "")
			e.d.Remove(&volume.RemoveRequest{Name: "evil"})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.create("keep", nil)
			keep := e.record("keep")
			e.close()
			c.plant(e, keep.ID)
			e.open()
			if c.then != nil {
				c.then(e)
			}
			if !e.hasKey(keep.ID) {
				t.Fatal("another record's removal destroyed the key of the volume keep")
			}
			if got := listNames(t, e.d); !slices.Equal(got, []string{"keep"}) {
				t.Fatalf("List = %v", got)
			}
			if got := e.record("keep"); got.ID != keep.ID {
				t.Fatalf("keep is now %+v", got)
			}
			if err := e.d.Undelete("evil", ""); err == nil {
				t.Fatal("the planted record could be brought back")
			}
			if _, err := e.d.Get(&volume.GetRequest{Name: "evil"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(evil) = %v", err)
			}
		})
	}
}

// recordingMounter mounts nothing and notes where it was asked to.
type recordingMounter struct {
	mu  sync.Mutex
	mps []string
}

func (r *recordingMounter) mount(_, mp, _ string, _ *crypto.VolumeKeys, _ MountOptions, _ *logrus.Entry) (Mount, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mps = append(r.mps, mp)
	return newFakeMount(), nil
}

// A record whose name is no valid volume name decodes and is its key, but
// the name is a path below the mount root: "." is the mount root itself,
// ".." and "../x" lie outside it. Start-up must neither mount there, nor
// remove directories there, nor keep a record that Docker cannot remove
// (every request refuses its name). It is quarantined; its folder is left
// alone.
func TestAttackRecordWithInvalidName(t *testing.T) {
	rm := &recordingMounter{}
	e := newEnv(t, func(c *Config) { c.Mounter = rm.mount })
	outsideID, dotID := newFolderID(t), newFolderID(t)
	// A format 1 folder: its header names no one, so the database's name
	// is taken (and written into the upgraded header).
	writeV1Folder(t, e.d.backing(outsideID), e.keyRaw, []byte("x"))
	e.close()
	e.writeRecord("../outside", mustJSON(t, map[string]any{"id": outsideID, "name": "../outside", "mounts": map[string]int{"c1": 1}}))
	e.writeRecord(".", mustJSON(t, map[string]any{"id": dotID, "name": ".", "removing": true}))
	e.writeRecord("has space", mustJSON(t, map[string]any{"id": newFolderID(t), "name": "has space"}))
	rep := e.open(func(c *Config) { c.Mounter = rm.mount })

	for _, mp := range rm.mps {
		if !strings.HasPrefix(mp, e.mountRoot+"/") {
			t.Errorf("mounted at %s, outside the mount root %s", mp, e.mountRoot)
		}
	}
	if _, err := os.Stat(filepath.Join(e.mountRoot, "..", "outside")); err == nil {
		t.Error("a directory was made outside the mount root")
	}
	if _, err := os.Stat(e.mountRoot); err != nil {
		t.Errorf("the mount root: %v", err)
	}
	slices.Sort(rep.Quarantined)
	if want := []string{".", "../outside", "has space"}; !slices.Equal(rep.Quarantined, want) {
		t.Errorf("quarantined %q, want %q", rep.Quarantined, want)
	}
	for _, n := range listNames(t, e.d) {
		if ValidateName(n) != nil {
			t.Errorf("List answers the invalid name %q", n)
		}
	}
	if _, err := os.Stat(e.d.backing(outsideID)); err != nil {
		t.Errorf("the quarantined record's folder: %v", err)
	}
}
