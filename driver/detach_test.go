package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// hangFS is a FUSE file system whose lookup of "hang" never answers until
// the test lets it: a hung server.
type hangFS struct {
	fs.Inode
	entered chan struct{}
	gate    chan struct{}
}

var _ fs.NodeLookuper = (*hangFS)(nil)

func (h *hangFS) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == "hang" {
		h.entered <- struct{}{}
		<-h.gate
	}
	return nil, syscall.ENOENT
}

func (h *hangFS) mount(_, mp, name string, _ *crypto.VolumeKeys, _ *logrus.Entry) (Mount, error) {
	return fs.Mount(mp, h, &fs.Options{MountOptions: fuse.MountOptions{FsName: "securevol:" + name, Name: "securevol"}})
}

// A FUSE server that hangs on a request cannot make the last Unmount hang:
// the mount is detached, and once the server has left the request
// unanswered for UnmountWait its connection is aborted, which fails the
// request stuck in it. Whether the stuck request holds the mountpoint
// itself (the unmount fails as busy) or came through a bind mount
// elsewhere (the unmount goes through but the server does not end).
func TestDetachAbortsHungServer(t *testing.T) {
	testenv.RequireFUSE(t)
	for _, through := range []string{"mountpoint", "bind mount"} {
		t.Run(through, func(t *testing.T) {
			h := &hangFS{entered: make(chan struct{}, 1), gate: make(chan struct{})}
			t.Cleanup(func() { close(h.gate) }) // lets the handler, and the server, end
			const wait = 300 * time.Millisecond
			e := newEnv(t, func(c *Config) { c.Mounter = h.mount; c.UnmountWait = wait })
			e.create("vol", nil)
			mp := e.mount("vol", "c1")
			path := mp
			if through == "bind mount" {
				path = filepath.Join(t.TempDir(), "bind")
				mustDo(t, os.Mkdir(path, 0o755))
				mustDo(t, unix.Mount(mp, path, "", unix.MS_BIND, ""))
				t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
			}
			stuck := make(chan error, 1)
			go func() { _, err := os.Lstat(filepath.Join(path, "hang")); stuck <- err }()
			select {
			case <-h.entered:
			case <-time.After(5 * time.Second):
				t.Fatal("the lookup never reached the server")
			}

			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- e.d.Unmount(&volume.UnmountRequest{Name: "vol", ID: "c1"}) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Unmount blocks on a hung FUSE server")
			}
			t.Logf("Unmount took %v", time.Since(start).Round(time.Millisecond))
			select {
			case err := <-stuck:
				if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("the stuck lookup ended with %v, want the connection aborted", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request stuck in the hung server still waits: its connection was not aborted")
			}
			if mounted(t, mp) || e.d.Mounted() != 0 {
				t.Fatal("still mounted")
			}
		})
	}
}
