package driver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

func TestMountReferenceCounting(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("data", map[string]string{"uid": "1000", "mode": "0770"})
	mp := e.mount("data", "c1")
	if mp != filepath.Join(e.mountRoot, "data") || !mounted(t, mp) {
		t.Fatalf("Mount answered %q; mounted: %v", mp, mounted(t, mp))
	}
	// The FUSE root shows the owner and mode asked for.
	fi, err := os.Stat(mp)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || fi.Mode().Perm() != 0o770 {
		t.Errorf("mount root: uid %d mode %v", st.Uid, fi.Mode())
	}
	if err := os.WriteFile(filepath.Join(mp, "hello.txt"), []byte("hello, world"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only ciphertext reaches the backing folder.
	assertNoPlaintext(t, e.d.backing(e.record("data").ID), "hello")

	e.mount("data", "c2") // a second container
	e.mount("data", "c1") // docker cp repeats the container's mount ID ...
	if v := e.record("data"); len(v.Mounts) != 2 || v.Mounts["c1"] != 2 {
		t.Fatalf("references %v", v.Mounts)
	}
	g, _ := e.d.Get(&volume.GetRequest{Name: "data"})
	if g.Volume.Mountpoint != mp || g.Volume.Status["mounts"] != 3 || g.Volume.Status["mounted"] != true {
		t.Fatalf("Get while mounted: %+v", g.Volume)
	}
	if err := e.d.Remove(&volume.RemoveRequest{Name: "data"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Remove while mounted = %v", err)
	}
	e.unmount("data", "c1") // ... and unmounts it when done: c1 still runs
	e.unmount("data", "c2")
	if !mounted(t, mp) {
		t.Fatal("unmounted while c1 still holds a reference")
	}
	if b, err := os.ReadFile(filepath.Join(mp, "hello.txt")); err != nil || string(b) != "hello, world" {
		t.Fatalf("c1's view after docker cp: %q %v", b, err)
	}
	e.unmount("data", "c1")
	if mounted(t, mp) || e.d.Mounted() != 0 {
		t.Fatal("still mounted after the last Unmount")
	}
	if p, _ := e.d.Path(&volume.PathRequest{Name: "data"}); p.Mountpoint != "" {
		t.Fatalf("Path after unmount = %q", p.Mountpoint)
	}
	// An unknown ID is harmless.
	e.unmount("data", "never-mounted")

	// Data survives an unmount and a driver restart.
	e.close()
	e.open()
	mp = e.mount("data", "c3")
	if b, err := os.ReadFile(filepath.Join(mp, "hello.txt")); err != nil || string(b) != "hello, world" {
		t.Fatalf("after remount: %q %v", b, err)
	}
	e.unmount("data", "c3")
	if err := e.d.Remove(&volume.RemoveRequest{Name: "data"}); err != nil {
		t.Fatal(err)
	}
}

func assertNoPlaintext(t testing.TB, dir, needle string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.Contains(d.Name(), needle) {
			t.Errorf("plaintext name in the backing folder: %s", p)
		}
		if d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(needle)) {
				t.Errorf("plaintext in backing file %s", p)
			}
		}
		return nil
	})
}

func TestFailedMountLeavesNothing(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Mounter = failingMounter })
	e.create("vol", nil)
	_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "abc"})
	if err == nil || !strings.Contains(err.Error(), "mount vol") {
		t.Fatalf("Mount = %v", err)
	}
	if v := e.record("vol"); len(v.Mounts) != 0 {
		t.Errorf("reference left after a failed mount: %v", v.Mounts)
	}
	if _, err := os.Stat(e.d.mountpoint("vol")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mountpoint left after a failed mount: %v", err)
	}
	if e.d.Mounted() != 0 {
		t.Error("driver believes the volume is mounted")
	}
	// The volume is not stuck: it can still be removed.
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
}

// Unmounting behind the driver's back is noticed: the next Mount mounts
// again instead of handing out an empty directory.
func TestExternalUnmountNoticed(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600)
	if err := unix.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; e.d.Mounted() != 0; i++ {
		if i > 1000 {
			t.Fatal("driver did not notice the unmount")
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
	mp = e.mount("vol", "c2")
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "x" {
		t.Fatalf("after external unmount: %q %v", b, err)
	}
}

// Many volumes mounted and unmounted at once, with repeated IDs: every
// count comes out right and nothing stays mounted.
func TestConcurrentMountUnmount(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	const vols, ids = 12, 4
	for i := range vols {
		e.create(fmt.Sprintf("v%02d", i), nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, vols*ids*4)
	for i := range vols {
		for j := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name, id := fmt.Sprintf("v%02d", i), fmt.Sprintf("c%d", j)
				for round := range 3 {
					res, err := e.d.Mount(&volume.MountRequest{Name: name, ID: id})
					if err != nil {
						errs <- err
						return
					}
					if j == 0 { // docker cp
						if _, err := e.d.Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
							errs <- err
							return
						}
					}
					p := filepath.Join(res.Mountpoint, fmt.Sprintf("%s-%d", id, round))
					if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
						errs <- fmt.Errorf("write %s: %w", p, err)
					}
					if err := e.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
						errs <- err
						return
					}
					if j == 0 {
						if err := e.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.d.Mounted(); n != 0 {
		t.Fatalf("%d volumes still mounted", n)
	}
	for i := range vols {
		name := fmt.Sprintf("v%02d", i)
		if v := e.record(name); len(v.Mounts) != 0 {
			t.Errorf("%s: references left %v", name, v.Mounts)
		}
		if mounted(t, filepath.Join(e.mountRoot, name)) {
			t.Errorf("%s still mounted", name)
		}
	}
	// Every write made it.
	mp := e.mount("v00", "check")
	ents, _ := os.ReadDir(mp)
	if len(ents) != ids*3 {
		t.Errorf("v00 holds %d files, want %d", len(ents), ids*3)
	}
	e.unmount("v00", "check")
	if e.tracked() != 0 {
		t.Error("lock entries linger")
	}
}
