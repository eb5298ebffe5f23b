package driver

import (
	"github.com/securevol/securevol/internal/testenv"

	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"
)

// These tests mount for real through cryptfs.

func mounted(t testing.TB, path string) bool {
	t.Helper()
	mps, err := mountsUnder(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp == filepath.Clean(path) {
			return true
		}
	}
	return false
}

func (e *env) mount(name, id string) string {
	e.t.Helper()
	res, err := e.d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Mountpoint
}

func (e *env) unmount(name, id string) {
	e.t.Helper()
	if err := e.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		e.t.Fatal(err)
	}
}

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

// Restart with references: a clean shutdown unmounts everything but keeps
// the references, and the next start mounts those volumes again.
func TestRestartRemountsReferencedVolumes(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("used", nil)
	e.create("idle", nil)
	mp := e.mount("used", "c1")
	os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600)
	e.mount("idle", "c2")
	e.unmount("idle", "c2")
	e.close()
	if mounted(t, mp) {
		t.Fatal("Close left a mount")
	}
	rep := e.open()
	if rep.Remounted != 1 || !mounted(t, mp) || mounted(t, filepath.Join(e.mountRoot, "idle")) {
		t.Fatalf("start report %+v", rep)
	}
	if v := e.record("used"); v.Mounts["c1"] != 1 {
		t.Fatalf("references after restart %v", v.Mounts)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read after restart: %q %v", b, err)
	}
}

// A mount left behind by a server that went away without unmounting (here:
// a driver abandoned without Close) is detached at the next start and the
// volume is mounted again.
func TestStartDetachesStaleMounts(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	old := e.d
	e.st.Close()
	e.d, e.st = nil, nil
	rep := e.open()
	if rep.StaleMounts != 1 || rep.Remounted != 1 || !mounted(t, mp) {
		t.Fatalf("start report %+v", rep)
	}
	if mps, _ := mountsUnder(mp); len(mps) != 1 {
		t.Fatalf("%d mounts stacked at %s", len(mps), mp)
	}
	// The abandoned driver's server ends once its mount is detached.
	for i := 0; old.Mounted() != 0; i++ {
		if i > 2000 {
			t.Fatal("the abandoned FUSE server did not end")
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
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

// A busy mount (a process holds a file open) still goes at the last
// Unmount: it is detached lazily.
func TestUnmountBusy(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	f, err := os.Create(filepath.Join(mp, "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e.unmount("vol", "c1")
	if mounted(t, mp) {
		t.Fatal("busy mount still in the namespace")
	}
	if _, err := f.Write([]byte("still writable")); err != nil {
		t.Errorf("open file broke: %v", err)
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

// A bind mount of the mountpoint made elsewhere (as a container holds one)
// keeps the FUSE connection alive after the unmount: the last Unmount must
// still answer promptly, and the holder keeps working.
func TestUnmountWhileBoundElsewhere(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t, func(c *Config) { c.UnmountWait = 300 * time.Millisecond })
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600)
	bind := filepath.Join(t.TempDir(), "bind")
	os.Mkdir(bind, 0o755)
	if err := unix.Mount(mp, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bind, unix.MNT_DETACH)
	start := time.Now()
	e.unmount("vol", "c1")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Unmount took %v", took)
	}
	if mounted(t, mp) {
		t.Fatal("still mounted at the mountpoint")
	}
	if b, err := os.ReadFile(filepath.Join(bind, "f")); err != nil || string(b) != "x" {
		t.Fatalf("the bind mount broke: %q %v", b, err)
	}
	// The volume can be mounted again meanwhile.
	mp = e.mount("vol", "c2")
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "x" {
		t.Fatalf("mounted again: %q %v", b, err)
	}
}
