package backing

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

// outside is a file outside the backing folder that planted symlinks point
// at; every test checks it never changes.
type outside struct {
	path string
	data []byte
	st   unix.Stat_t
}

func newOutside(t *testing.T) *outside {
	t.Helper()
	o := &outside{path: filepath.Join(t.TempDir(), "secret"), data: []byte("host secret, do not touch")}
	if err := os.WriteFile(o.path, o.data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(o.path, "user.mark", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	past := time.Unix(1_000_000_000, 0)
	os.Chtimes(o.path, past, past)
	if err := unix.Stat(o.path, &o.st); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *outside) check(t *testing.T, op string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(o.path, &st); err != nil {
		t.Fatalf("%s: the outside file is gone: %v", op, err)
	}
	b, _ := os.ReadFile(o.path)
	x := make([]byte, 16)
	n, _ := unix.Getxattr(o.path, "user.mark", x)
	xs, _ := unix.Listxattr(o.path, make([]byte, 256))
	switch {
	case !bytes.Equal(b, o.data):
		t.Errorf("%s changed the outside file's contents", op)
	case st.Mode != o.st.Mode || st.Uid != o.st.Uid || st.Gid != o.st.Gid:
		t.Errorf("%s changed the outside file's mode or owner: %o %d:%d", op, st.Mode, st.Uid, st.Gid)
	case st.Mtim != o.st.Mtim || st.Nlink != o.st.Nlink:
		t.Errorf("%s changed the outside file's times or links", op)
	case string(x[:n]) != "x" || xs != len("user.mark")+1:
		t.Errorf("%s changed the outside file's xattrs", op)
	}
}

func openTestRoot(t *testing.T) (*Dir, string) {
	t.Helper()
	p := t.TempDir()
	d, err := OpenRoot(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, p
}

// TestNeverFollowsLastComponent plants a symlink to an outside file and
// runs every operation on its name.
func TestNeverFollowsLastComponent(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (chown)")
	}
	ts := [2]unix.Timespec{{Sec: 5}, {Sec: 5}}
	ops := []struct {
		name string
		op   func(d *Dir) error
	}{
		{"OpenFile read", func(d *Dir) error { _, err := d.OpenFile("l", unix.O_RDONLY, 0); return err }},
		{"OpenFile write", func(d *Dir) error { _, err := d.OpenFile("l", unix.O_RDWR|unix.O_TRUNC, 0); return err }},
		{"OpenFile create", func(d *Dir) error { _, err := d.OpenFile("l", unix.O_RDWR|unix.O_CREAT, 0o600); return err }},
		{"ReadSmall", func(d *Dir) error { _, err := d.ReadSmall("l", 100); return err }},
		{"OpenDir", func(d *Dir) error { _, err := d.OpenDir("l"); return err }},
		{"Chmod", func(d *Dir) error { return d.Chmod("l", 0o666) }},
		{"Chown", func(d *Dir) error { return d.Chown("l", 1234, 1234) }},
		{"Utimes", func(d *Dir) error { return d.Utimes("l", &ts) }},
		{"Setxattr", func(d *Dir) error { return d.Setxattr("l", "user.mark", []byte("y"), 0) }},
		{"Removexattr", func(d *Dir) error { return d.Removexattr("l", "user.mark") }},
		{"Link", func(d *Dir) error { return d.Link(d, "l", "l2") }},
		{"Unlink", func(d *Dir) error { return d.Unlink("l") }},
		{"WriteAtomic", func(d *Dir) error { return d.WriteAtomic("l", []byte("new"), 0o600) }},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			o := newOutside(t)
			d, root := openTestRoot(t)
			if err := os.Symlink(o.path, filepath.Join(root, "l")); err != nil {
				t.Fatal(err)
			}
			tc.op(d) // may fail or succeed on the link itself; never on the target
			o.check(t, tc.name)
		})
	}
}

// TestRefusesWrongTypes plants FIFOs, devices and directories where files
// are expected: nothing blocks, nothing but a regular file is opened.
func TestRefusesWrongTypes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (mknod)")
	}
	d, root := openTestRoot(t)
	plant := map[string]func(p string) error{
		"fifo":   func(p string) error { return unix.Mkfifo(p, 0o600) },
		"null":   func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) },
		"zero":   func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))) },
		"dir":    func(p string) error { return os.Mkdir(p, 0o700) },
		"socket": func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o600, 0) },
	}
	for name, mk := range plant {
		if err := mk(filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 3)
		go func() {
			_, err := d.OpenFile(name, unix.O_RDONLY, 0)
			done <- err
		}()
		go func() {
			_, err := d.OpenFile(name, unix.O_WRONLY|unix.O_CREAT, 0o600)
			done <- err
		}()
		go func() {
			_, err := d.ReadSmall(name, 64)
			done <- err
		}()
		for range 3 {
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) || !errors.Is(err, unix.EIO) {
					t.Errorf("%s: got %v, want ErrNotRegular (an EIO)", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: open blocked", name)
			}
		}
	}
	if _, err := d.OpenDir("fifo"); !errors.Is(err, ErrNotDir) {
		t.Errorf("OpenDir of a FIFO: %v, want ErrNotDir", err)
	}
}

func TestReadSmallBound(t *testing.T) {
	d, root := openTestRoot(t)
	if err := os.WriteFile(filepath.Join(root, "f"), make([]byte, 17), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := d.ReadSmall("f", 17); err != nil || len(b) != 17 {
		t.Fatalf("ReadSmall at the bound: %d bytes, %v", len(b), err)
	}
	if _, err := d.ReadSmall("f", 16); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadSmall over the bound: %v, want ErrTooLarge", err)
	}
}

func TestNamesAreOneComponent(t *testing.T) {
	d, root := openTestRoot(t)
	os.Mkdir(filepath.Join(root, "sub"), 0o700)
	for _, name := range []string{"", ".", "..", "sub/x", "../x", "a\x00b"} {
		if err := d.Mkdir(name, 0o700); !errors.Is(err, ErrBadName) {
			t.Errorf("Mkdir(%q): %v, want ErrBadName", name, err)
		}
		if _, err := d.OpenFile(name, unix.O_RDONLY, 0); !errors.Is(err, ErrBadName) {
			t.Errorf("OpenFile(%q): %v, want ErrBadName", name, err)
		}
	}
}

func TestWriteAtomicReplaces(t *testing.T) {
	d, root := openTestRoot(t)
	for _, s := range []string{"one", "two"} {
		if err := d.WriteAtomic("h", []byte(s), 0o400); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "h")); string(b) != s {
			t.Fatalf("got %q, want %q", b, s)
		}
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	st, _ := os.Stat(filepath.Join(root, "h"))
	if st.Mode().Perm() != 0o400 {
		t.Fatalf("mode %o, want 0400", st.Mode().Perm())
	}
}
