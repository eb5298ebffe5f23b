package driver

import (
	"fmt"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// BenchmarkCreateMountUnmount: one volume's whole first use, through real
// FUSE (target: create+mount under 100 ms).
func BenchmarkCreateMountUnmount(b *testing.B) {
	testenv.RequireFUSE(b)
	e := newEnv(b)
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("bench-%06d", i)
		i++
		if err := e.d.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"uid": "1000"}}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.d.Mount(&volume.MountRequest{Name: name, ID: "c"}); err != nil {
			b.Fatal(err)
		}
		if err := e.d.Unmount(&volume.UnmountRequest{Name: name, ID: "c"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList1000 is the engine's List over the Unix socket with 1,000
// volumes, 100 of them with references (target: under 50 ms).
func BenchmarkList1000(b *testing.B) {
	e := newEnv(b)
	// Records straight into the store: creating 1,000 folders would only
	// slow the setup; List reads nothing else.
	if err := e.st.Update(func(tx *store.Tx) error {
		for i := range 1000 {
			v := &store.Volume{ID: fmt.Sprintf("%032x", i), Name: fmt.Sprintf("vol-%04d", i), Options: DefaultOptions()}
			if i%10 == 0 {
				v.Mounts = map[string]int{"abcdef0123456789": 1}
			}
			if err := tx.Put(v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	c := serveUnix(b, NewHandler(e.d, nil))
	for b.Loop() {
		a := call(b, c, "POST", "/VolumeDriver.List", "{}")
		if n := len(a.body["Volumes"].([]any)); a.status != 200 || n != 1000 {
			b.Fatalf("List: %d, %d volumes", a.status, n)
		}
	}
}

// BenchmarkMountUnmount is Mount and Unmount of one volume on a single
// host, and BenchmarkMountUnmountCluster the same in cluster mode (etcd on
// loopback): the difference is what the claim costs a mount.
func BenchmarkMountUnmount(b *testing.B) {
	testenv.RequireFUSE(b)
	e := newEnv(b)
	e.create("bench", nil)
	benchMountUnmount(b, e.d)
}

func BenchmarkMountUnmountCluster(b *testing.B) {
	testenv.RequireFUSE(b)
	key, _ := newKey(b)
	n := newClusterNode(b, testenv.StartEtcd(b), "bench", b.TempDir(), key, 15*time.Second)
	if err := n.d.Create(&volume.CreateRequest{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	benchMountUnmount(b, n.d)
}

func benchMountUnmount(b *testing.B, d *Driver) {
	for b.Loop() {
		if _, err := d.Mount(&volume.MountRequest{Name: "bench", ID: "c"}); err != nil {
			b.Fatal(err)
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: "bench", ID: "c"}); err != nil {
			b.Fatal(err)
		}
	}
}
