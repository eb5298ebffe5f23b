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
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// A descriptor still open when the last Unmount comes keeps the FUSE
// server serving (the unmount goes lazy). Once the node has let go of
// its claim another node may write the folder, so writes through that
// descriptor must fail, not land.
func TestClusterUnmountFencesALingeringServer(t *testing.T) {
	c := twoNodes(t, 5*time.Second)
	a, b := c.a, c.b
	if err := a.d.Create(&volume.CreateRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	mp := a.mount(t, "vol", "c1")
	held, err := os.OpenFile(filepath.Join(mp, "held"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	a.unmount(t, "vol", "c1")
	mpb := b.mount(t, "vol", "c2")
	before := testenv.TreeState(t, filepath.Join(c.shared, "volumes"))
	if _, err := held.WriteAt([]byte("after the unmount"), 0); !errors.Is(err, unix.EIO) {
		t.Errorf("write through a descriptor that outlived the unmount, while node b holds the volume: %v, want EIO", err)
	}
	if err := held.Sync(); !errors.Is(err, unix.EIO) {
		t.Errorf("fsync through it: %v, want EIO", err)
	}
	held.Close()
	sameTree(t, before, testenv.TreeState(t, filepath.Join(c.shared, "volumes")))
	if got, err := os.ReadFile(filepath.Join(mpb, "held")); err != nil || len(got) != 0 {
		t.Errorf("node b reads %q, %v", got, err)
	}
	b.unmount(t, "vol", "c2")
}

// A node whose mount is fenced (its lease lost, then a new one taken)
// does not hand that mount to a new container: the Mount fails, saying
// why, until the containers still using the fenced mount are gone.
func TestClusterFencedMountIsNotHandedOut(t *testing.T) {
	c := twoNodes(t, 2*time.Second)
	a := c.a
	if err := a.d.Create(&volume.CreateRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	mp := a.mount(t, "vol", "c1")
	revokeNode(t, c.etcd, "node-a")
	eventuallyEIO(t, filepath.Join(mp, "probe"), 2*time.Second)
	_, err := a.d.Mount(&volume.MountRequest{Name: "vol", ID: "c2"})
	if err == nil || !strings.Contains(err.Error(), "lease") || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("mount while this node's mount is fenced: %v; want an error about the lost lease naming the mount c1", err)
	}
	if err := a.d.Unmount(&volume.UnmountRequest{Name: "vol", ID: "c2"}); err != nil {
		t.Fatal(err) // no reference: ignored
	}
	a.unmount(t, "vol", "c1")
	mp = a.mount(t, "vol", "c3")
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatalf("a fresh mount after the fenced one went: %v", err)
	}
	a.unmount(t, "vol", "c3")
}

// A Mount that waited for another node's claim looks at the record again
// once it holds the claim: the other node may have removed the volume
// meanwhile (a removal with a grace keeps its folder), and a mount of a
// removed volume would be purged under its users.
func TestClusterMountAfterRemovalElsewhere(t *testing.T) {
	c := twoNodes(t, 5*time.Second)
	a, b := c.a, c.b
	if err := a.d.Create(&volume.CreateRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	// Node b holds the volume, as its Remove does, while node a's Mount
	// waits; then it hides the volume (what a removal with a grace does)
	// and lets go.
	claim, err := b.node.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.d.Mount(&volume.MountRequest{Name: "vol", ID: "c1"})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := b.st.Update(func(tx *store.Tx) error {
		r, err := tx.Get("vol")
		if err != nil {
			return err
		}
		if err := tx.Delete("vol"); err != nil {
			return err
		}
		r.RemovedAt, r.PurgeAt = time.Now().UTC(), time.Now().UTC().Add(time.Hour)
		return tx.PutRemoved(r)
	}); err != nil {
		t.Fatal(err)
	}
	claim.Release()
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Fatalf("mount of a volume removed while the mount waited: %v, want not found", err)
	}
	if a.d.Mounted() != 0 {
		t.Fatal("the removed volume is mounted")
	}
}

// Two nodes creating one volume at once (a stack's tasks starting on two
// nodes) end with one volume and one folder: the second create finds the
// first's record instead of overwriting it and orphaning its folder.
func TestClusterConcurrentCreate(t *testing.T) {
	c := twoNodes(t, 5*time.Second)
	for i := range 5 {
		name := "vol" + string(rune('0'+i))
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, n := range []*clusterNode{c.a, c.b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = n.d.Create(&volume.CreateRequest{Name: name})
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("create %s on both nodes: %v, %v", name, errs[0], errs[1])
		}
	}
	ents, err := os.ReadDir(filepath.Join(c.shared, "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.a.d.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(l.Volumes) {
		t.Fatalf("%d folders for %d volumes: concurrent creates left orphans", len(ents), len(l.Volumes))
	}
}
