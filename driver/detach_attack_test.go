package driver

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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
