package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

func TestRemoveShredsKeyThenFolder(t *testing.T) {
	e := newEnv(t)
	e.create("gone", nil)
	dir := e.d.backing(e.record("gone").ID)
	if err := e.d.Remove(&volume.RemoveRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backing folder still there: %v", err)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "gone"}); err == nil {
		t.Fatal("Get answers a removed volume")
	}
	// A removed name can be created again, as a new volume.
	e.create("gone", nil)
}

func TestRemoveRefusedWhileReferenced(t *testing.T) {
	e := newEnv(t)
	e.create("busy", nil)
	v := e.record("busy")
	v.Mounts = map[string]int{"m1": 1}
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	err := e.d.Remove(&volume.RemoveRequest{Name: "busy"})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Remove of a referenced volume = %v", err)
	}
	if _, err := readHeader(e.d.backing(v.ID)); err != nil {
		t.Fatalf("refused Remove damaged the volume: %v", err)
	}
}

// A Remove cut short after the key was destroyed is finished at start.
func TestInterruptedRemoveFinishedAtStart(t *testing.T) {
	e := newEnv(t)
	e.create("half", nil)
	v := e.record("half")
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	if err := destroyKey(e.d.backing(v.ID), nil); err != nil {
		t.Fatal(err)
	}
	g, err := e.d.Get(&volume.GetRequest{Name: "half"})
	if err != nil || !strings.HasPrefix(g.Volume.Status["state"].(string), "removing") {
		t.Fatalf("Get of a half-removed volume: %+v %v", g, err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "half", ID: "m"}); err == nil {
		t.Fatal("Mount of a half-removed volume succeeded")
	}
	e.close()
	rep := e.open()
	if len(rep.Finished) != 1 || rep.Finished[0] != "half" {
		t.Fatalf("start report %+v", rep)
	}
	if _, err := os.Stat(e.d.backing(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder of the half-removed volume survived: %v", err)
	}
	if _, err := e.st.Get("half"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record survived: %v", err)
	}
}

// A Remove cut short after the key was destroyed but before the files were
// all deleted is finished at start without a false alarm: the folder has
// data and no header because it is being removed, not because a key was lost.
func TestInterruptedRemoveWithDataIsNoProblem(t *testing.T) {
	e := newEnv(t)
	e.create("half", nil)
	v := e.record("half")
	dir := e.d.backing(v.ID)
	if err := os.WriteFile(filepath.Join(dir, "c2VjcmV0"), []byte("ciphertext"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	if err := destroyKey(dir, nil); err != nil {
		t.Fatal(err)
	}
	e.close()
	rep := e.open()
	if len(rep.Finished) != 1 || len(rep.Problems) != 0 {
		t.Fatalf("start report %+v", rep)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder survived: %v", err)
	}
}

// blockRemoveAll returns a removeAll that blocks until release is called.
func blockRemoveAll(t *testing.T) (removeAll func(string) error, entered <-chan string, release func()) {
	in := make(chan string, 16)
	gate := make(chan struct{})
	var once sync.Once
	rel := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(rel)
	return func(p string) error {
		in <- p
		<-gate
		return os.RemoveAll(p)
	}, in, rel
}

// Deleting a huge volume's files takes long. Other volumes must not wait for
// it, not even when a key rotation queues up behind it.
func TestSlowRemoveStallsNoOtherVolume(t *testing.T) {
	e := newEnv(t)
	e.create("huge", nil)
	removeAll, entered, release := blockRemoveAll(t)
	e.d.removeAll = removeAll
	removed := make(chan error, 1)
	go func() { removed <- e.d.Remove(&volume.RemoveRequest{Name: "huge"}) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Remove never reached the file deletion")
	}
	newKey, _ := crypto.RandomMasterKey()
	rotated := make(chan error, 1)
	go func() { _, err := e.d.RotateKey(crypto.StaticKey{Key: newKey}); rotated <- err }()
	time.Sleep(50 * time.Millisecond) // let the rotation queue up
	created := make(chan error, 1)
	go func() { created <- e.d.Create(&volume.CreateRequest{Name: "other"}) }()
	select {
	case err := <-created:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Error("Create of another volume waits for the file deletion of a removed one")
		release()
		<-created
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if err := <-rotated; err != nil {
		t.Fatal(err)
	}
}

// A removal cut short is finished at start, but the engine gives a plugin
// about 9 s to listen: a huge folder must not keep the socket closed.
func TestStartDoesNotWaitForSlowRemoval(t *testing.T) {
	e := newEnv(t)
	e.create("huge", nil)
	v := e.record("huge")
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	e.close()
	removeAll, entered, release := blockRemoveAll(t)
	e.beforeStart = func(d *Driver) { d.removeAll = removeAll }
	opened := make(chan *StartReport, 1)
	go func() { opened <- e.open(func(c *Config) { c.LockWait = 200 * time.Millisecond }) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("start never reached the file deletion")
	}
	select {
	case <-opened:
	case <-time.After(startRemovalWait + 5*time.Second):
		release()
		<-opened
		t.Fatal("Start waited for the deletion of a huge folder")
	}
	// The key is gone already; the volume cannot be mounted or recreated meanwhile.
	if _, err := readHeader(e.d.backing(v.ID)); !errors.Is(err, backing.ErrNoHeader) {
		t.Fatalf("key of a volume being removed: %v", err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "huge", ID: "m"}); err == nil {
		t.Fatal("Mount of a volume being removed succeeded")
	}
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.st.Get("huge"); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removal was never finished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(e.d.backing(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder survived: %v", err)
	}
}
