package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// viewOf is the create request of a view of src.
func viewOf(name, src string) *volume.CreateRequest {
	return &volume.CreateRequest{Name: name, Options: map[string]string{OptReadOnlyOf: src}}
}

// wantErr fails unless err is of class and names every one of words.
func wantErr(t *testing.T, what string, err, class error, words ...string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("%s: %v, want %v", what, err, class)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: %v, want it to name %q", what, err, w)
		}
	}
}

// readOnlyChanges tries to change the plaintext at mp: each must fail with
// EROFS.
func readOnlyChanges(t *testing.T, mp string) {
	t.Helper()
	for name, change := range map[string]func() error{
		"create":   func() error { return os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644) },
		"write":    func() error { return os.WriteFile(filepath.Join(mp, "f"), []byte("overwritten"), 0o644) },
		"truncate": func() error { return os.Truncate(filepath.Join(mp, "f"), 0) },
		"unlink":   func() error { return os.Remove(filepath.Join(mp, "f")) },
		"mkdir":    func() error { return os.Mkdir(filepath.Join(mp, "d"), 0o755) },
		"chmod":    func() error { return os.Chmod(mp, 0o700) },
	} {
		if err := change(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through a view: %v, want EROFS", name, err)
		}
	}
}

// sameTree fails if the backing folder changed between two TreeStates.
func sameTree(t *testing.T, before, after map[string]string) {
	t.Helper()
	if d := testenv.TreeDiff(before, after); len(d) > 0 {
		t.Errorf("the backing folder changed:\n%s", strings.Join(d, "\n"))
	}
}

// Creating a view: of an existing volume only, alone, never of a view;
// again with the same source it is a no-op.
func TestViewCreate(t *testing.T) {
	e := newEnv(t)
	e.create("src", nil)
	for _, tc := range []struct {
		what  string
		req   *volume.CreateRequest
		class error
	}{
		{"with another option", &volume.CreateRequest{Name: "v1", Options: map[string]string{OptReadOnlyOf: "src", "size": "10M"}}, ErrInvalid},
		{"of a missing volume", viewOf("v1", "nosuch"), ErrNotFound},
		{"of itself", viewOf("v1", "v1"), ErrInvalid},
		{"over a volume", viewOf("src", "src"), ErrInvalid},
	} {
		if err := e.d.Create(tc.req); !errors.Is(err, tc.class) {
			t.Errorf("a view %s: %v, want %v", tc.what, err, tc.class)
		}
	}
	if err := e.d.Create(viewOf("ro", "src")); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Create(viewOf("ro", "src")); err != nil {
		t.Fatalf("the same view again: %v", err)
	}
	e.create("other", nil)
	wantErr(t, "the view name with another source", e.d.Create(viewOf("ro", "other")), ErrConflict)
	wantErr(t, "a volume over the view's name", e.d.Create(&volume.CreateRequest{Name: "ro"}), ErrConflict, "view")
	wantErr(t, "a view of a view", e.d.Create(viewOf("ro2", "ro")), ErrInvalid, "src")
	if _, err := os.Stat(e.d.backing(e.record("ro").ID)); !os.IsNotExist(err) {
		t.Fatalf("a view has a folder: %v", err)
	}
	g, err := e.d.Get(&volume.GetRequest{Name: "ro"})
	if err != nil || g.Volume.Status["view"] != "read-only view of src" || g.Volume.Status["state"] != "ok" {
		t.Fatalf("inspect of the view: %+v, %v", g, err)
	}
	err = e.d.Snapshot(context.Background(), "ro", func(*backing.Dir, *crypto.Header, crypto.KeySource) error { return nil })
	wantErr(t, "a snapshot of a view", err, ErrInvalid, "src")
}

// On a single host a view shows its source read-only, never while the
// source is mounted and never the other way round; removing the view
// leaves the source's key and data; the source cannot go while it has
// views.
func TestViewSingleHost(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("src", nil)
	mp := e.mount("src", "w")
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("written by src"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Create(viewOf("ro", "src")); err != nil {
		t.Fatal(err)
	}
	_, err := e.d.Mount(&volume.MountRequest{Name: "ro", ID: "r1"})
	wantErr(t, "view mount while the source is mounted", err, ErrConflict, "src")
	e.unmount("src", "w")

	dir := e.d.backing(e.record("src").ID)
	before := testenv.TreeState(t, dir)
	vp := e.mount("ro", "r1")
	e.mount("ro", "r2") // a second container: the same mount
	if b, err := os.ReadFile(filepath.Join(vp, "f")); err != nil || string(b) != "written by src" {
		t.Fatalf("read through the view: %q, %v", b, err)
	}
	readOnlyChanges(t, vp)
	_, err = e.d.Mount(&volume.MountRequest{Name: "src", ID: "w"})
	wantErr(t, "source mount while a view is mounted", err, ErrConflict, "ro")
	wantErr(t, "remove the source of a view", e.d.Remove(&volume.RemoveRequest{Name: "src"}), ErrConflict, "ro")
	e.unmount("ro", "r1")
	e.unmount("ro", "r2")
	sameTree(t, before, testenv.TreeState(t, dir))

	// A restart keeps the view and finds nothing wrong with it.
	e.close()
	if rep := e.open(); len(rep.Problems) > 0 || rep.Volumes != 2 {
		t.Fatalf("start with a view: %+v", rep)
	}
	if err := e.d.Remove(&volume.RemoveRequest{Name: "ro"}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, before, testenv.TreeState(t, dir))
	mp = e.mount("src", "w")
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "written by src" {
		t.Fatalf("the source after its view was removed: %q, %v", b, err)
	}
	e.unmount("src", "w")
	if err := e.d.Remove(&volume.RemoveRequest{Name: "src"}); err != nil {
		t.Fatalf("remove the source once its view is gone: %v", err)
	}
	if e.tracked() != 0 || len(e.d.holds) != 0 {
		t.Fatalf("state left: %d volumes, %d holds", e.tracked(), len(e.d.holds))
	}
}

// A view is bound to its source's folder: a later volume by the source's
// name (here: the record replaced behind the driver's back, as damage
// would) is refused, not served.
func TestViewBoundToItsSource(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("src", nil)
	if err := e.d.Create(viewOf("ro", "src")); err != nil {
		t.Fatal(err)
	}
	old := e.record("src")
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Delete("src") }); err != nil {
		t.Fatal(err)
	}
	e.create("src", nil)
	if e.record("src").ID == old.ID {
		t.Fatal("the new volume has the old folder")
	}
	_, err := e.d.Mount(&volume.MountRequest{Name: "ro", ID: "r"})
	wantErr(t, "mount of a view whose source was replaced", err, ErrConflict, "replaced")
	if g, err := e.d.Get(&volume.GetRequest{Name: "ro"}); err != nil || !strings.HasPrefix(g.Volume.Status["state"].(string), "error") {
		t.Fatalf("inspect of the orphaned view: %+v, %v", g, err)
	}
}

// In cluster mode two nodes mount a view at once and read its source; a
// write through it fails and changes nothing; the source's write mount
// waits for the readers, failing with them named, and succeeds once they
// let go; a view mount while a node writes fails naming it.
func TestClusterViews(t *testing.T) {
	c := twoNodes(t, 5*time.Second)
	a, b := c.a, c.b
	if err := a.d.Create(&volume.CreateRequest{Name: "src"}); err != nil {
		t.Fatal(err)
	}
	mp := a.mount(t, "src", "w")
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("written by a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.d.Create(viewOf("ro", "src")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := b.d.Mount(&volume.MountRequest{Name: "ro", ID: "r"})
	wantErr(t, "view mount on b while a writes", err, ErrConflict, "node-a")
	if d := time.Since(start); d < time.Second {
		t.Fatalf("the view mount gave up after %v, before its mount wait", d)
	}
	a.unmount(t, "src", "w")

	rec, err := a.st.Get("src")
	if err != nil {
		t.Fatal(err)
	}
	dir := a.d.backing(rec.ID)
	before := testenv.TreeState(t, dir)
	for _, n := range []*clusterNode{a, b} {
		vp := n.mount(t, "ro", "r")
		if got, err := os.ReadFile(filepath.Join(vp, "f")); err != nil || string(got) != "written by a" {
			t.Fatalf("%s reads %q through the view, %v", n.name, got, err)
		}
	}
	readOnlyChanges(t, b.d.mountpoint("ro"))
	wantErr(t, "remove the source of a view", b.d.Remove(&volume.RemoveRequest{Name: "src"}), ErrConflict, "ro")

	start = time.Now()
	_, err = a.d.Mount(&volume.MountRequest{Name: "src", ID: "w"})
	wantErr(t, "source mount while two nodes read it", err, ErrConflict, "node-a", "node-b", "read-only")
	if d := time.Since(start); d < time.Second {
		t.Fatalf("the source mount gave up after %v, before its mount wait", d)
	}
	a.unmount(t, "ro", "r")
	wantErr(t, "remove the view on a while b mounts it", a.d.Remove(&volume.RemoveRequest{Name: "ro"}), ErrConflict, "node-b")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(200 * time.Millisecond)
		if err := b.d.Unmount(&volume.UnmountRequest{Name: "ro", ID: "r"}); err != nil {
			t.Error(err)
		}
	}()
	mp = a.mount(t, "src", "w") // waits for the last reader
	wg.Wait()
	sameTree(t, before, testenv.TreeState(t, dir))
	a.unmount(t, "src", "w")

	if err := a.d.Remove(&volume.RemoveRequest{Name: "ro"}); err != nil {
		t.Fatal(err)
	}
	mp = b.mount(t, "src", "w2")
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "written by a" {
		t.Fatalf("the source after its view was removed: %q, %v", got, err)
	}
	b.unmount(t, "src", "w2")
}
