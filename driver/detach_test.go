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

func (h *hangFS) mount(_, mp, name string, _ *crypto.VolumeKeys, _ MountOptions, _ *logrus.Entry) (Mount, error) {
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
