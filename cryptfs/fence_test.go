package cryptfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/internal/testenv"
)

// Once its fence trips, a mount answers EIO to every change, reads
// included, and its backing folder stays exactly as it was: no byte, name,
// mode or time changes, even through a descriptor opened before.
func TestFenceStopsEveryChange(t *testing.T) {
	fence := backing.NewFence(time.Now().Add(time.Hour))
	m := newTestMountOpts(t, Options{Fence: fence})
	p := filepath.Join(m.dir, "f")
	if err := os.WriteFile(p, []byte("before the fence"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(m.dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	open, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	before := testenv.TreeState(t, m.backing)

	fence.Trip()
	changes := map[string]func() error{
		"write through an open descriptor": func() error { _, err := open.WriteAt([]byte("after"), 0); return err },
		"fsync":                            open.Sync,
		"create":                           func() error { return os.WriteFile(filepath.Join(m.dir, "new"), []byte("x"), 0o644) },
		"truncate":                         func() error { return os.Truncate(p, 3) },
		"mkdir":                            func() error { return os.Mkdir(filepath.Join(m.dir, "e"), 0o755) },
		"rmdir":                            func() error { return os.Remove(filepath.Join(m.dir, "d")) },
		"unlink":                           func() error { return os.Remove(p) },
		"rename":                           func() error { return os.Rename(p, filepath.Join(m.dir, "g")) },
		"chmod":                            func() error { return os.Chmod(p, 0o600) },
		"symlink":                          func() error { return os.Symlink("f", filepath.Join(m.dir, "l")) },
		"setxattr":                         func() error { return unix.Setxattr(p, "user.x", []byte("y"), 0) },
		"read":                             func() error { _, err := os.ReadFile(p); return err },
	}
	for name, change := range changes {
		if err := change(); !errors.Is(err, unix.EIO) {
			t.Errorf("%s on a fenced mount: %v, want EIO", name, err)
		}
	}
	open.Close() // release and flush must change nothing either
	if d := testenv.TreeDiff(before, testenv.TreeState(t, m.backing)); len(d) > 0 {
		t.Errorf("the backing folder changed behind the fence:\n%s", strings.Join(d, "\n"))
	}
	if len(m.logs.AllEntries()) == 0 {
		t.Error("a fenced mount logged nothing")
	}
}

// A fence trips by itself once its deadline has passed, with nobody to
// tell it: what a node paused for longer than its lease meets on resuming.
func TestFenceDeadline(t *testing.T) {
	fence := backing.NewFence(time.Now().Add(300 * time.Millisecond))
	m := newTestMountOpts(t, Options{Fence: fence})
	p := filepath.Join(m.dir, "f")
	if err := os.WriteFile(p, []byte("in time"), 0o644); err != nil {
		t.Fatal(err)
	}
	fence.Extend(time.Now().Add(100 * time.Millisecond)) // earlier: ignored
	time.Sleep(350 * time.Millisecond)
	if err := os.WriteFile(p, []byte("too late"), 0o644); !errors.Is(err, unix.EIO) {
		t.Fatalf("write after the deadline: %v, want EIO", err)
	}
	fence.Extend(time.Now().Add(time.Hour)) // too late: stays tripped
	if fence.Check() == nil {
		t.Fatal("a tripped fence came back")
	}
}
