package driver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
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
	after := testenv.TreeState(t, filepath.Join(c.shared, "volumes"))
	for p, s := range after {
		if before[p] != s {
			t.Errorf("%s changed by node a after it let go: %q, was %q", p, s, before[p])
		}
	}
	if got, err := os.ReadFile(filepath.Join(mpb, "held")); err != nil || len(got) != 0 {
		t.Errorf("node b reads %q, %v", got, err)
	}
	b.unmount(t, "vol", "c2")
}
