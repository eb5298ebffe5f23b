package cryptfs

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

// A read-only mount shows what the folder holds and refuses every change
// with EROFS; its backing folder stays exactly as it was.
func TestReadOnlyRefusesEveryChange(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	if err := os.WriteFile(p, []byte("written before"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	m.opts.ReadOnly = true
	m.mount()
	before := testenv.TreeState(t, m.backing)

	if b, err := os.ReadFile(p); err != nil || string(b) != "written before" {
		t.Fatalf("read through the read-only mount: %q, %v", b, err)
	}
	if ents, err := os.ReadDir(m.dir); err != nil || len(ents) != 2 {
		t.Fatalf("listing: %v, %v", ents, err)
	}
	open, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := open.Sync(); err != nil {
		t.Errorf("fsync of a file open for reading: %v", err)
	}
	changes := map[string]func() error{
		"open for writing": func() error { f, err := os.OpenFile(p, os.O_WRONLY, 0); f.Close(); return err },
		"create":           func() error { return os.WriteFile(m.path("new"), []byte("x"), 0o644) },
		"truncate":         func() error { return os.Truncate(p, 3) },
		"mkdir":            func() error { return os.Mkdir(m.path("e"), 0o755) },
		"rmdir":            func() error { return os.Remove(m.path("d")) },
		"unlink":           func() error { return os.Remove(p) },
		"rename":           func() error { return os.Rename(p, m.path("g")) },
		"chmod":            func() error { return os.Chmod(p, 0o600) },
		"utimes":           func() error { return unix.UtimesNano(p, make([]unix.Timespec, 2)) },
		"symlink":          func() error { return os.Symlink("f", m.path("l")) },
		"link":             func() error { return os.Link(p, m.path("h")) },
		"setxattr":         func() error { return unix.Setxattr(p, "user.x", []byte("y"), 0) },
		"mknod":            func() error { return unix.Mkfifo(m.path("fifo"), 0o644) },
	}
	for name, change := range changes {
		if err := change(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", name, err)
		}
	}
	open.Close()
	if d := testenv.TreeDiff(before, testenv.TreeState(t, m.backing)); len(d) > 0 {
		t.Errorf("the backing folder changed through a read-only mount:\n%s", strings.Join(d, "\n"))
	}
}

// The gate refuses changes itself, without asking the file system below,
// should the kernel send one despite the "ro" mount.
func TestReadOnlyGate(t *testing.T) {
	g := &readOnlyGate{RawFileSystem: fuse.NewDefaultRawFileSystem()} // answers ENOSYS or OK
	erofs := fuse.Status(unix.EROFS)
	_, writev := g.Writev(nil, &fuse.WriteIn{}, nil)
	_, write := g.Write(nil, &fuse.WriteIn{}, nil)
	_, cfr := g.CopyFileRange(nil, &fuse.CopyFileRangeIn{})
	for name, st := range map[string]fuse.Status{
		"setattr":     g.SetAttr(nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
		"create":      g.Create(nil, &fuse.CreateIn{}, "x", &fuse.CreateOut{}),
		"tmpfile":     g.Tmpfile(nil, &fuse.CreateIn{}, &fuse.CreateOut{}),
		"open rdwr":   g.Open(nil, &fuse.OpenIn{Flags: unix.O_RDWR}, &fuse.OpenOut{}),
		"open trunc":  g.Open(nil, &fuse.OpenIn{Flags: unix.O_TRUNC}, &fuse.OpenOut{}),
		"write":       write,
		"writev":      writev,
		"copy range":  cfr,
		"fallocate":   g.Fallocate(nil, &fuse.FallocateIn{}),
		"mkdir":       g.Mkdir(nil, &fuse.MkdirIn{}, "x", &fuse.EntryOut{}),
		"mknod":       g.Mknod(nil, &fuse.MknodIn{}, "x", &fuse.EntryOut{}),
		"symlink":     g.Symlink(nil, &fuse.InHeader{}, "t", "x", &fuse.EntryOut{}),
		"link":        g.Link(nil, &fuse.LinkIn{}, "x", &fuse.EntryOut{}),
		"unlink":      g.Unlink(nil, &fuse.InHeader{}, "x"),
		"rmdir":       g.Rmdir(nil, &fuse.InHeader{}, "x"),
		"rename":      g.Rename(nil, &fuse.RenameIn{}, "x", "y"),
		"setxattr":    g.SetXAttr(nil, &fuse.SetXAttrIn{}, "user.x", nil),
		"removexattr": g.RemoveXAttr(nil, &fuse.InHeader{}, "user.x"),
	} {
		if st != erofs {
			t.Errorf("%s: %v, want EROFS", name, st)
		}
	}
	if st := g.Open(nil, &fuse.OpenIn{Flags: unix.O_RDONLY}, &fuse.OpenOut{}); st == erofs {
		t.Errorf("open for reading: %v, want it passed on", st)
	}
}
