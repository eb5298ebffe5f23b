package driver

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

// A FUSE connection's control folder is named by its device number, and
// the kernel hands a freed device number to the next FUSE mount. A detach
// that still watches its old connection after that connection ended (its
// server hung in a request, so the mount never reported its end: the
// last holder of the mount went away meanwhile) must not take the new
// mount, another volume's perhaps, for its own, and abort it because it
// is busy.
func TestAttackAbortReusedConnection(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t, func(c *Config) { c.UnmountWait = 300 * time.Millisecond })
	root := t.TempDir()
	var (
		old  *liveMount
		busy *hangFS
		mp2  string
	)
	for try := 0; try < 20 && busy == nil; try++ {
		mp1 := filepath.Join(root, "old")
		mp2 = filepath.Join(root, "new")
		mustDo(t, os.MkdirAll(mp1, 0o755))
		mustDo(t, os.MkdirAll(mp2, 0o755))
		srv, err := fs.Mount(mp1, &fs.Inode{}, &fs.Options{MountOptions: fuse.MountOptions{FsName: "securevol:old", Name: "securevol"}})
		mustDo(t, err)
		// As attach records it.
		conn, err := e.d.connOf(mp1)
		if err != nil || conn == nil {
			t.Fatalf("connOf(%s) = %v, %v", mp1, conn, err)
		}
		lm := &liveMount{m: srv, mountpoint: mp1, conn: conn, ended: make(chan struct{})}
		mustDo(t, srv.Unmount())
		h := &hangFS{entered: make(chan struct{}, 1), gate: make(chan struct{})}
		m, err := h.mount("", mp2, "new", nil, MountOptions{}, nil)
		mustDo(t, err)
		if c, _ := e.d.connOf(mp2); c != nil && c.dir == lm.conn.dir {
			old, busy = lm, h
			t.Cleanup(func() { close(h.gate); m.Unmount() })
			break
		}
		close(h.gate)
		mustDo(t, m.Unmount())
	}
	if busy == nil {
		t.Fatal("the kernel never handed the freed FUSE device number to the next mount")
	}
	stuck := make(chan error, 1)
	go func() { _, err := os.Lstat(filepath.Join(mp2, "hang")); stuck <- err }()
	select {
	case <-busy.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup never reached the new mount's server")
	}

	e.d.settle(e.d.log, old)
	select {
	case err := <-stuck:
		t.Fatalf("the detach of an ended mount aborted the new mount that reused its device number (its request ended with %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
}

// The mount root may be reached through a symlink (/var/lib moved to
// another disk and linked back is common), while mountinfo names mounts
// by their real path. The hung server must still be found and aborted:
// before, nothing under the mount root was recognised as mounted, so the
// stuck request waited for ever.
func TestAttackAbortUnderSymlinkedMountRoot(t *testing.T) {
	testenv.RequireFUSE(t)
	real := filepath.Join(t.TempDir(), "real")
	link := filepath.Join(t.TempDir(), "link")
	mustDo(t, os.Mkdir(real, 0o755))
	mustDo(t, os.Symlink(real, link))
	h := &hangFS{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	t.Cleanup(func() { close(h.gate) })
	e := newEnv(t, func(c *Config) { c.Mounter = h.mount; c.UnmountWait = 300 * time.Millisecond; c.MountRoot = link })
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	stuck := make(chan error, 1)
	go func() { _, err := os.Lstat(filepath.Join(mp, "hang")); stuck <- err }()
	select {
	case <-h.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup never reached the server")
	}
	done := make(chan error, 1)
	go func() { done <- e.d.Unmount(&volume.UnmountRequest{Name: "vol", ID: "c1"}) }()
	select {
	case err := <-done:
		mustDo(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Unmount blocks on a hung FUSE server")
	}
	select {
	case err := <-stuck:
		if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("the stuck lookup ended with %v, want the connection aborted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request stuck in the hung server still waits: its connection was not aborted")
	}
}

// Under a symlinked mount root too, a mount left by a server that went
// away is detached at the next start, and the volume mounted again once
// (not stacked on the dead mount).
func TestAttackStaleMountUnderSymlinkedMountRoot(t *testing.T) {
	testenv.RequireFUSE(t)
	real := filepath.Join(t.TempDir(), "real")
	link := filepath.Join(t.TempDir(), "link")
	mustDo(t, os.Mkdir(real, 0o755))
	mustDo(t, os.Symlink(real, link))
	viaLink := func(c *Config) { c.MountRoot = link }
	e := newEnv(t, viaLink)
	e.create("vol", nil)
	e.mount("vol", "c1")
	e.st.Close()
	e.d, e.st = nil, nil // abandoned without Close: its mount stays
	rep := e.open(viaLink)
	mp := filepath.Join(real, "vol")
	if rep.StaleMounts != 1 || rep.Remounted != 1 || mountsAt(t, mp) != 1 {
		t.Fatalf("start report %+v; %d mounts at %s", rep, mountsAt(t, mp), mp)
	}
}

// A holder that keeps the mount busy after the last Unmount (a bind mount
// elsewhere, with many requests in flight at every moment) is being
// served, not stuck: its connection must not be aborted, which would fail
// every file it has open. Only a server that answers nothing for
// UnmountWait is hung.
func TestAttackBusyHolderNotAborted(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t, func(c *Config) { c.UnmountWait = 300 * time.Millisecond })
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	mustDo(t, os.WriteFile(filepath.Join(mp, "f"), make([]byte, 1<<20), 0o644))
	bind := filepath.Join(t.TempDir(), "bind")
	mustDo(t, os.Mkdir(bind, 0o755))
	mustDo(t, unix.Mount(mp, bind, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		failed atomic.Value
		reads  atomic.Int64
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := os.ReadFile(filepath.Join(bind, "f")); err != nil {
					failed.Store(err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	e.unmount("vol", "c1")
	before := reads.Load()
	time.Sleep(time.Second) // past UnmountWait, twice
	stop.Store(true)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("the busy holder's reads failed after the Unmount: %v", err)
	}
	if reads.Load() == before {
		t.Fatal("the holder made no progress after the Unmount")
	}
}
