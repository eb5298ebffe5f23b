package driver

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// clusterNode is one driver in cluster mode: its own mount root, the
// shared root and etcd of the test, the same master key as the others.
type clusterNode struct {
	name  string
	d     *Driver
	node  *cluster.Node
	st    *store.Store
	mroot string
}

func newClusterNode(t testing.TB, etcd *testenv.Etcd, name, shared string, key *crypto.MasterKey, ttl time.Duration) *clusterNode {
	t.Helper()
	log := logrus.New()
	log.SetOutput(testWriter{t})
	log.SetLevel(logrus.DebugLevel)
	if _, bench := t.(*testing.B); bench {
		log.SetLevel(logrus.WarnLevel)
	}
	n, err := cluster.Join(cluster.Config{Endpoints: etcd.Endpoints(), NodeName: name, LeaseTTL: ttl, MountWait: time.Second, Log: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(n.Records())
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterNode{name: name, node: n, st: st, mroot: filepath.Join(t.TempDir(), "mnt")}
	c.d, err = New(Config{StateDir: shared, MountRoot: c.mroot, Store: st, Cluster: n,
		Keys: []crypto.KeySource{crypto.StaticKey{Key: key}}, Log: logrus.NewEntry(log).WithField("node", name)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *clusterNode) close() {
	if c.d != nil {
		c.d.Close()
		c.node.Close()
		c.d = nil
	}
}

func (c *clusterNode) mount(t testing.TB, name, id string) string {
	t.Helper()
	r, err := c.d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		t.Fatalf("%s: mount %s: %v", c.name, name, err)
	}
	return r.Mountpoint
}

func (c *clusterNode) unmount(t testing.TB, name, id string) {
	t.Helper()
	if err := c.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		t.Fatalf("%s: unmount %s: %v", c.name, name, err)
	}
}

// testCluster is etcd and two nodes on one shared root under one key.
type testCluster struct {
	etcd   *testenv.Etcd
	a, b   *clusterNode
	shared string
	key    *crypto.MasterKey
}

func twoNodes(t *testing.T, ttl time.Duration) *testCluster {
	testenv.RequireFUSE(t)
	c := &testCluster{etcd: testenv.StartEtcd(t), shared: t.TempDir()}
	c.key, _ = newKey(t)
	c.a = newClusterNode(t, c.etcd, "node-a", c.shared, c.key, ttl)
	c.b = newClusterNode(t, c.etcd, "node-b", c.shared, c.key, ttl)
	return c
}

// Two nodes share the volumes: what one creates the other lists and
// gets; a mount excludes the other node, whose Mount waits and then fails
// naming the holder; after the holder's unmount the other node mounts and
// reads the data.
func TestClusterOneWriterAtATime(t *testing.T) {
	c := twoNodes(t, 5*time.Second)
	a, b := c.a, c.b
	if s := a.d.Capabilities().Capabilities.Scope; s != "global" {
		t.Fatalf("scope %q in cluster mode, want global", s)
	}
	if err := a.d.Create(&volume.CreateRequest{Name: "shared"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.d.Get(&volume.GetRequest{Name: "shared"}); err != nil {
		t.Fatalf("node b does not see the volume node a created: %v", err)
	}
	if l, err := b.d.List(); err != nil || len(l.Volumes) != 1 {
		t.Fatalf("node b lists %v, %v", l, err)
	}
	mp := a.mount(t, "shared", "c1")
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("from a"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := b.d.Mount(&volume.MountRequest{Name: "shared", ID: "c2"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("mount on node b while node a holds it: %v; want a conflict naming node-a", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("node b gave up after %v, before its mount wait", d)
	}
	if err := b.d.Remove(&volume.RemoveRequest{Name: "shared"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("remove on node b while node a holds it: %v", err)
	}
	if err := b.d.Unmount(&volume.UnmountRequest{Name: "shared", ID: "c2"}); err != nil {
		t.Fatal(err) // holds no reference: ignored
	}
	a.unmount(t, "shared", "c1")
	mp = b.mount(t, "shared", "c2")
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "from a" {
		t.Fatalf("node b reads %q, %v", got, err)
	}
	b.unmount(t, "shared", "c2")
	if err := a.d.Remove(&volume.RemoveRequest{Name: "shared"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.d.Get(&volume.GetRequest{Name: "shared"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node b still gets a removed volume: %v", err)
	}
}

// revokeNode revokes the lease node holds, as etcd does when it expires.
func revokeNode(t *testing.T, etcd *testenv.Etcd, node string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/securevol/nodes/"+node)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("node %s's lease record: %v, %v", node, resp, err)
	}
	var rec struct{ Lease string }
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	id, err := strconv.ParseInt(rec.Lease, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(id)); err != nil {
		t.Fatal(err)
	}
}

// eventuallyEIO waits until a write to path fails with EIO.
func eventuallyEIO(t *testing.T, path string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; ; i++ {
		err := os.WriteFile(path, []byte("write "+strconv.Itoa(i)), 0o644)
		if errors.Is(err, unix.EIO) {
			return
		}
		if err != nil {
			t.Fatalf("write before the fence: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes still succeed %v after the lease was lost", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node whose lease is lost is fenced: its mount answers EIO, nothing it
// writes afterwards reaches the backing folder, even through a descriptor
// opened before; another node then mounts the volume and reads what was
// written before the fence.
func TestClusterLostLeaseFences(t *testing.T) {
	c := twoNodes(t, 2*time.Second)
	etcd, a, b, shared := c.etcd, c.a, c.b, c.shared
	if err := a.d.Create(&volume.CreateRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	mp := a.mount(t, "vol", "c1")
	if err := os.WriteFile(filepath.Join(mp, "kept"), []byte("before the fence"), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(filepath.Join(mp, "held"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	revokeNode(t, etcd, "node-a")
	eventuallyEIO(t, filepath.Join(mp, "probe"), 2*time.Second)
	folder := filepath.Join(shared, "volumes")
	before := testenv.TreeState(t, folder)
	if _, err := held.WriteAt([]byte("after the fence"), 0); !errors.Is(err, unix.EIO) {
		t.Errorf("write through a descriptor opened before the fence: %v, want EIO", err)
	}
	if err := held.Sync(); !errors.Is(err, unix.EIO) {
		t.Errorf("fsync after the fence: %v, want EIO", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "kept"), []byte("overwritten"), 0o644); !errors.Is(err, unix.EIO) {
		t.Errorf("overwrite after the fence: %v, want EIO", err)
	}
	held.Close()
	sameTree(t, before, testenv.TreeState(t, folder))

	mpb := b.mount(t, "vol", "c2")
	if got, err := os.ReadFile(filepath.Join(mpb, "kept")); err != nil || string(got) != "before the fence" {
		t.Fatalf("node b reads %q, %v", got, err)
	}
	// The fenced node's unmount lets go of nothing of b's.
	a.unmount(t, "vol", "c1")
	if err := os.WriteFile(filepath.Join(mpb, "kept"), []byte("b writes on"), 0o644); err != nil {
		t.Fatalf("node b's mount after node a's unmount: %v", err)
	}
	b.unmount(t, "vol", "c2")
	// Node a, with a new lease, can mount again.
	mp = a.mount(t, "vol", "c3")
	if got, err := os.ReadFile(filepath.Join(mp, "kept")); err != nil || string(got) != "b writes on" {
		t.Fatalf("node a reads %q, %v after taking the volume back", got, err)
	}
	a.unmount(t, "vol", "c3")
}

// A node that cannot reach etcd fences itself by its own clock before its
// lease can expire there: nobody has to tell it (what a pause or a
// partition longer than the TTL looks like from the node).
func TestClusterUnreachableEtcdFences(t *testing.T) {
	c := twoNodes(t, 2*time.Second)
	etcd, a := c.etcd, c.a
	if err := a.d.Create(&volume.CreateRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	mp := a.mount(t, "vol", "c1")
	etcd.Pause()
	defer etcd.Resume()
	start := time.Now()
	eventuallyEIO(t, filepath.Join(mp, "probe"), 3*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("fenced %v after etcd went away, later than the 2s TTL", d)
	}
	etcd.Resume()
	a.unmount(t, "vol", "c1")
}

// etcd restarted with its data loses no volume; etcd lost altogether is
// rebuilt from the folders' headers at the next start.
func TestClusterEtcdRestartAndRebuild(t *testing.T) {
	tc := twoNodes(t, 5*time.Second)
	etcd, a, b := tc.etcd, tc.a, tc.b
	for _, n := range []string{"one", "two"} {
		if err := a.d.Create(&volume.CreateRequest{Name: n, Options: map[string]string{"uid": "1000"}}); err != nil {
			t.Fatal(err)
		}
	}
	etcd.Stop()
	etcd.Start()
	var l *volume.ListResponse
	var err error
	for range 50 {
		if l, err = b.d.List(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || len(l.Volumes) != 2 {
		t.Fatalf("after etcd restarted node b lists %v, %v", l, err)
	}
	b.mount(t, "one", "c")
	b.unmount(t, "one", "c")

	// A new, empty etcd: a node starting on the shared root recovers
	// every volume, options included.
	a.close()
	b.close()
	c := newClusterNode(t, testenv.StartEtcd(t), "node-c", tc.shared, tc.key, 5*time.Second)
	got, err := c.d.Get(&volume.GetRequest{Name: "two"})
	if err != nil {
		t.Fatalf("volume not rebuilt from its folder: %v", err)
	}
	rec, err := c.st.Get("two")
	if err != nil || rec.Options.UID != 1000 || got.Volume.Name != "two" {
		t.Fatalf("rebuilt record %+v, %v", rec, err)
	}
}
