package backing

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Behind a tripped fence every change through a Dir, through the
// directories opened from it and through the fence's descriptor calls
// fails with ErrFenced (an EIO) and changes nothing; reads go on. A
// read-only fence refuses the same with ErrReadOnly (an EROFS).
func TestFencedDirChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fence func() (f *Fence, trip func())
		want  error
		errno unix.Errno
	}{
		{"tripped", func() (*Fence, func()) { f := NewFence(time.Now().Add(time.Hour)); return f, f.Trip }, ErrFenced, unix.EIO},
		{"read-only", func() (*Fence, func()) { return ReadOnlyFence(), func() {} }, ErrReadOnly, unix.EROFS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, trip := tc.fence()
			testFenceChangesNothing(t, f, trip, tc.want, tc.errno)
		})
	}
}

func testFenceChangesNothing(t *testing.T, f *Fence, trip func(), want error, errno unix.Errno) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WithRoot(root, func(d *Dir) error {
		d.SetFence(f)
		sub, err := d.OpenDir("sub")
		if err != nil {
			return err
		}
		defer sub.Close()
		fd, err := d.OpenFile("f", unix.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		trip()
		for name, change := range map[string]func() error{
			"mkdir":       func() error { return d.Mkdir("x", 0o700) },
			"sub mkdir":   func() error { return sub.Mkdir("x", 0o700) },
			"unlink":      func() error { return d.Unlink("f") },
			"rmdir":       func() error { return d.Rmdir("sub") },
			"rename":      func() error { return Rename(d, "f", sub, "f", 0) },
			"create":      func() error { _, err := d.OpenFile("n", unix.O_RDWR|unix.O_CREAT, 0o600); return err },
			"write new":   func() error { return d.WriteNew("n", []byte("x"), 0o600) },
			"write atomc": func() error { return d.WriteAtomic("f", []byte("x"), 0o600) },
			"chmod":       func() error { return d.Chmod("f", 0o644) },
			"symlink":     func() error { return d.Symlink("t", "l") },
			"setxattr":    func() error { return d.Setxattr("f", "user.a", []byte("b"), 0) },
			"pwrite":      func() error { _, err := f.PwriteFull(fd, []byte("XX"), 0); return err },
			"ftruncate":   func() error { return f.Ftruncate(fd, 0) },
			"fsync":       func() error { return f.Fsync(fd, false) },
			"dir sync":    d.Sync,
		} {
			if err := change(); !errors.Is(err, want) || Errno(err) != errno {
				t.Errorf("%s behind the fence: %v (errno %v), want %v", name, err, Errno(err), want)
			}
		}
		_, err = d.ReadSmall("f", 100)
		return err
	})
	if err != nil {
		t.Fatalf("reading behind the fence: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(root, "f"))
	ents, _ := os.ReadDir(root)
	if err != nil || string(b) != "data" || len(ents) != 2 {
		t.Fatalf("the folder changed behind the fence: f=%q (%v), %d entries", b, err, len(ents))
	}
}

// A nil fence never trips: a single host's folders are its own.
func TestNilFence(t *testing.T) {
	var f *Fence
	if f.Check() != nil || f.Tripped() {
		t.Fatal("a nil fence tripped")
	}
}
