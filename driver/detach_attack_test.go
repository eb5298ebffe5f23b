package driver

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

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
		m, err := h.mount("", mp2, "new", nil, 0, nil)
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
