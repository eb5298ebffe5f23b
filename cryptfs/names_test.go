package cryptfs

import (
	"github.com/securevol/securevol/internal/testenv"

	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

func listDir(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatalf("readdir %s: %v", p, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func sameNames(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func TestRename(t *testing.T) {
	m := newTestMount(t)
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(m.path(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(name string) {
		t.Helper()
		if err := os.Mkdir(m.path(name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "A")
	write("b", "B")
	mkdir("d1")
	mkdir("d2")
	mkdir("empty")
	write("d1/inner", "inner")

	// Over an existing file.
	if err := os.Rename(m.path("a"), m.path("b")); err != nil {
		t.Fatal(err)
	}
	// A directory with content into another, then over an empty directory.
	if err := os.Rename(m.path("d1"), m.path("d2/moved")); err != nil {
		t.Fatal(err)
	}
	// (os.Rename refuses directories as targets; rename(2) does not.)
	if err := syscall.Rename(m.path("d2/moved"), m.path("empty")); err != nil {
		t.Fatalf("rename over empty directory: %v", err)
	}
	// Not over a directory that has entries.
	mkdir("full")
	write("full/x", "x")
	if err := syscall.Rename(m.path("empty"), m.path("full")); !isErrno(err, syscall.ENOTEMPTY) && !isErrno(err, syscall.EEXIST) {
		t.Fatalf("rename over non-empty directory: %v", err)
	}
	// RENAME_NOREPLACE and RENAME_EXCHANGE.
	write("c", "C")
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("b"), unix.AT_FDCWD, m.path("c"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Fatalf("RENAME_NOREPLACE onto existing: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("b"), unix.AT_FDCWD, m.path("c"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}

	m.remount()
	if got, want := listDir(t, m.dir), []string{"b", "c", "d2", "empty", "full"}; !sameNames(got, want) {
		t.Fatalf("root lists %q, want %q", got, want)
	}
	checkContent(t, m.path("b"), []byte("C"))
	checkContent(t, m.path("c"), []byte("A"))
	checkContent(t, m.path("empty/inner"), []byte("inner"))
	if got := listDir(t, m.path("d2")); len(got) != 0 {
		t.Fatalf("d2 lists %q", got)
	}
	// The emptied directories can be removed, the full one not.
	if err := os.Remove(m.path("d2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("full")); !isErrno(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a non-empty directory: %v", err)
	}
}

// TestRenameOpenChildren renames a directory while files in it are open
// and keeps using both the descriptors and new paths.
func TestRenameOpenChildren(t *testing.T) {
	m := newTestMount(t)
	if err := os.MkdirAll(m.path("a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(m.path("a/b/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(m.path("a"), m.path("z")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("z/b/g"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.path("z/b/f"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m.remount()
	checkContent(t, m.path("z/b/f"), []byte("still here"))
	checkContent(t, m.path("z/b/g"), []byte("new"))
}

func TestHardLinks(t *testing.T) {
	m := newTestMount(t)
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("orig"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path("orig"), m.path("d/link")); err != nil {
		t.Fatal(err)
	}
	// Writes through either name reach the same file.
	f, err := os.OpenFile(m.path("d/link"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(" two"))
	f.Close()
	m.remount()
	checkContent(t, m.path("orig"), []byte("one two"))
	var st1, st2 syscall.Stat_t
	syscall.Stat(m.path("orig"), &st1)
	syscall.Stat(m.path("d/link"), &st2)
	if st1.Ino != st2.Ino || st1.Nlink != 2 {
		t.Fatalf("inodes %d/%d, nlink %d", st1.Ino, st2.Ino, st1.Nlink)
	}
	if err := os.Remove(m.path("orig")); err != nil {
		t.Fatal(err)
	}
	checkContent(t, m.path("d/link"), []byte("one two"))
}

func TestSymlink(t *testing.T) {
	m := newTestMount(t)
	targets := []string{"x", "../up/and/over", "/etc/passwd", strings.Repeat("long/", 600)}
	for i, target := range targets {
		if err := os.Symlink(target, m.path(string(rune('a'+i)))); err != nil {
			t.Fatalf("symlink %d: %v", i, err)
		}
	}
	if err := os.Symlink(strings.Repeat("y", 4096), m.path("toolong")); !isErrno(err, syscall.ENAMETOOLONG) {
		t.Fatalf("over-long target: %v", err)
	}
	m.remount()
	for i, target := range targets {
		p := m.path(string(rune('a' + i)))
		got, err := os.Readlink(p)
		if err != nil || got != target {
			t.Fatalf("readlink %d: %q, %v", i, got, err)
		}
		fi, err := os.Lstat(p)
		if err != nil || fi.Size() != int64(len(target)) || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("lstat %d: %v size %d mode %v", i, err, fi.Size(), fi.Mode())
		}
	}
	// A symlink to a file in the mount works as a path.
	os.WriteFile(m.path("target"), []byte("t"), 0o644)
	os.Symlink("target", m.path("rel"))
	checkContent(t, m.path("rel"), []byte("t"))
}

func TestXattr(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(m.path("d"), 0o755)
	attrs := map[string][]byte{
		"user.a":           []byte("1"),
		"user.empty":       {},
		"user.bin":         {0, 1, 2, 255},
		"trusted.t":        []byte("trusted value"),
		"user.big":         pattern(1, 3000),
		"user." + "n12345": []byte("x"),
	}
	for k, v := range attrs {
		if err := unix.Setxattr(p, k, v, 0); err != nil {
			t.Fatalf("setxattr %s: %v", k, err)
		}
	}
	if err := unix.Setxattr(m.path("d"), "user.dir", []byte("on a dir"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.a", []byte("2"), unix.XATTR_CREATE); err != unix.EEXIST {
		t.Fatalf("XATTR_CREATE on existing: %v", err)
	}
	if err := unix.Setxattr(p, "user.none", []byte("2"), unix.XATTR_REPLACE); err != unix.ENODATA {
		t.Fatalf("XATTR_REPLACE on missing: %v", err)
	}
	// (The kernel itself checks ACL and capability values before setting.)
	for _, name := range []string{"security.selinux", "security.other"} {
		if err := unix.Setxattr(p, name, []byte("x"), 0); err != unix.EOPNOTSUPP {
			t.Fatalf("setxattr %s: %v, want EOPNOTSUPP", name, err)
		}
	}
	for _, name := range []string{"system.posix_acl_access", "security.selinux", "security.capability"} {
		if _, err := unix.Getxattr(p, name, make([]byte, 64)); err != unix.EOPNOTSUPP {
			t.Fatalf("getxattr %s: %v, want EOPNOTSUPP", name, err)
		}
	}
	// A backing attribute that is not ours stays hidden.
	back := filepath.Join(m.backing, m.backingFiles()[0])
	if err := unix.Setxattr(back, "user.foreign", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	m.remount()
	buf := make([]byte, 4096)
	for k, v := range attrs {
		n, err := unix.Getxattr(p, k, buf)
		if err != nil || !bytes.Equal(buf[:n], v) {
			t.Fatalf("getxattr %s: %q, %v", k, buf[:n], err)
		}
		if sz, err := unix.Getxattr(p, k, nil); err != nil || sz != len(v) {
			t.Fatalf("getxattr size %s: %d, %v", k, sz, err)
		}
	}
	if _, err := unix.Getxattr(p, "user.big", make([]byte, 10)); err != unix.ERANGE {
		t.Fatalf("small buffer: %v", err)
	}
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		got = append(got, s)
	}
	sort.Strings(got)
	var want []string
	for k := range attrs {
		want = append(want, k)
	}
	sort.Strings(want)
	if !sameNames(got, want) {
		t.Fatalf("listxattr %q, want %q", got, want)
	}
	if err := unix.Removexattr(p, "user.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, "user.a", buf); err != unix.ENODATA {
		t.Fatalf("after remove: %v", err)
	}
	if n, err := unix.Getxattr(m.path("d"), "user.dir", buf); err != nil || string(buf[:n]) != "on a dir" {
		t.Fatalf("dir xattr: %q %v", buf[:n], err)
	}
}

func TestFifo(t *testing.T) {
	m := newTestMount(t)
	p := m.path("fifo")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	// Device nodes are stored, as on ext4; the mount is nodev, so they
	// open nothing.
	if err := unix.Mknod(m.path("dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod of a device: %v", err)
	}
	m.remount()
	var dst unix.Stat_t
	if err := unix.Lstat(m.path("dev"), &dst); err != nil || dst.Mode&unix.S_IFMT != unix.S_IFCHR || dst.Rdev != unix.Mkdev(1, 3) {
		t.Fatalf("device node after remount: mode %o rdev %x, %v", dst.Mode, dst.Rdev, err)
	}
	if f, err := os.OpenFile(m.path("dev"), os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Fatal("a device node opened through the mount: it must be nodev")
	}
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lstat fifo: %v %v", fi.Mode(), err)
	}
	done := make(chan []byte)
	go func() {
		b, _ := os.ReadFile(p)
		done <- b
	}()
	if err := os.WriteFile(p, []byte("through the pipe"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-done:
		if string(b) != "through the pipe" {
			t.Fatalf("fifo read %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fifo read hangs")
	}
}

// TestLongNames uses names whose encrypted form is too long for ext4.
func TestLongNames(t *testing.T) {
	m := newTestMount(t)
	long := func(c byte) string { return strings.Repeat(string(c), 255) }
	a, b, d := long('a'), long('b'), long('d')
	if err := os.Mkdir(m.path(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path(d, a), []byte("long"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("short"), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path(strings.Repeat("c", 256)), nil, 0o644); !isErrno(err, syscall.ENAMETOOLONG) {
		t.Fatalf("256-byte name: %v", err)
	}
	// Every backing name fits ext4, the long ones through sidecars.
	filepath.Walk(m.backing, func(p string, fi os.FileInfo, err error) error {
		if len(fi.Name()) > 255 {
			t.Errorf("backing name of %d bytes", len(fi.Name()))
		}
		return nil
	})
	m.remount()
	if got := listDir(t, m.dir); !sameNames(got, []string{d, "short"}) {
		t.Fatalf("root lists %d names", len(got))
	}
	checkContent(t, m.path(d, a), []byte("long"))
	// Rename long → long, short → long and long → short.
	if err := os.Rename(m.path(d, a), m.path(d, b)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("short"), m.path(d, a)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path(d, b), m.path("short2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path("short2"), m.path(d, b)); err != nil {
		t.Fatal(err)
	}
	os.Symlink("target", m.path(long('s')))
	m.remount()
	if got := listDir(t, m.path(d)); !sameNames(got, []string{a, b}) {
		t.Fatalf("%d entries after renames", len(got))
	}
	checkContent(t, m.path(d, a), []byte("short"))
	checkContent(t, m.path(d, b), []byte("long"))
	if l, err := os.Readlink(m.path(long('s'))); err != nil || l != "target" {
		t.Fatalf("long symlink: %q %v", l, err)
	}
	// Deleting removes sidecars, too: nothing but bookkeeping of the
	// root is left.
	for _, p := range []string{m.path(d, a), m.path(d, b), m.path("short2"), m.path(long('s'))} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(m.path(d)); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(m.backing)
	for _, e := range ents {
		if e.Name() != crypto.HeaderName && e.Name() != crypto.DirIVName {
			t.Errorf("left behind in the backing folder: %s", e.Name())
		}
	}
}

// TestOwnership creates entries as an unprivileged user through an
// allow_other mount: they must belong to that user, with the mode asked
// for even though the daemon's umask is stricter.
func TestOwnership(t *testing.T) {
	testenv.RequireFUSE(t) // and root, to act as another user
	m := newTestMountOpts(t, Options{AllowOther: true})
	for p := m.dir; p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755) // let the test user reach the mountpoint
	}
	os.Chmod(m.dir, 0o777)
	script := `umask 000 && echo hi > f && mkdir d && mkfifo p && ln -s f l && mkdir d/sub`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = m.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4322}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
	m.remount()
	for name, mode := range map[string]os.FileMode{"f": 0o666, "d": os.ModeDir | 0o777, "p": os.ModeNamedPipe | 0o666, "l": os.ModeSymlink | 0o777, "d/sub": os.ModeDir | 0o777} {
		fi, err := os.Lstat(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 4321 || st.Gid != 4322 {
			t.Errorf("%s owned by %d:%d, want 4321:4322", name, st.Uid, st.Gid)
		}
		if fi.Mode() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	// default_permissions: another user cannot write the file.
	os.Chmod(m.path("f"), 0o644)
	cmd = exec.Command("/bin/sh", "-c", "echo x >> f")
	cmd.Dir = m.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 5555, Gid: 5555}}
	if err := cmd.Run(); err == nil {
		t.Error("user 5555 could append to a 0644 file of user 4321")
	}
}

// TestMountOptions checks what the kernel was told: the file system type
// and source, kernel permission checks, allow_other, and the readahead.
func TestMountOptions(t *testing.T) {
	m := newTestMountOpts(t, Options{AllowOther: true})
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == m.dir {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) < 4 {
		t.Fatalf("%s not in /proc/self/mounts", m.dir)
	}
	if f[0] != "securevol-test" || f[2] != "fuse.securevol" {
		t.Errorf("mounted as %s type %s", f[0], f[2])
	}
	for _, opt := range []string{"default_permissions", "allow_other", "nosuid", "nodev"} {
		if !strings.Contains(","+f[3]+",", ","+opt+",") {
			t.Errorf("mount options %s lack %s", f[3], opt)
		}
	}
	if os.Geteuid() == 0 {
		var st unix.Stat_t
		if err := unix.Stat(m.dir, &st); err != nil {
			t.Fatal(err)
		}
		ra, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
		if want := fmt.Sprint(readaheadRequests * DefaultMaxWrite >> 10); err == nil && strings.TrimSpace(string(ra)) != want {
			t.Errorf("readahead %s KiB, want %s", ra, want)
		}
	}
}

// TestListingsFollowChanges lists a directory between changes made through
// the mount: the kernel may cache listings (FOPEN_CACHE_DIR), and must
// drop them on every change.
func TestListingsFollowChanges(t *testing.T) {
	m := newTestMount(t)
	os.Mkdir(m.path("d"), 0o755)
	os.Mkdir(m.path("e"), 0o755)
	steps := []struct {
		do   func() error
		d, e []string
	}{
		{func() error { return os.WriteFile(m.path("d/a"), nil, 0o644) }, []string{"a"}, nil},
		{func() error { return os.WriteFile(m.path("d/b"), nil, 0o644) }, []string{"a", "b"}, nil},
		{func() error { return os.Rename(m.path("d/a"), m.path("e/a")) }, []string{"b"}, []string{"a"}},
		{func() error { return os.Rename(m.path("d/b"), m.path("d/c")) }, []string{"c"}, []string{"a"}},
		{func() error { return os.Link(m.path("d/c"), m.path("e/c")) }, []string{"c"}, []string{"a", "c"}},
		{func() error { return os.Remove(m.path("e/a")) }, []string{"c"}, []string{"c"}},
		{func() error { return os.Mkdir(m.path("d/sub"), 0o755) }, []string{"c", "sub"}, []string{"c"}},
		{func() error { return os.Remove(m.path("d/sub")) }, []string{"c"}, []string{"c"}},
		{func() error { return os.Symlink("x", m.path("e/l")) }, []string{"c"}, []string{"c", "l"}},
	}
	for i, s := range steps {
		// Open and read both directories first, so a cached listing
		// exists when the change happens.
		listDir(t, m.path("d"))
		listDir(t, m.path("e"))
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := listDir(t, m.path("d")); !sameNames(got, s.d) {
			t.Fatalf("step %d: d lists %q, want %q", i, got, s.d)
		}
		if got := listDir(t, m.path("e")); !sameNames(got, s.e) {
			t.Fatalf("step %d: e lists %q, want %q", i, got, s.e)
		}
	}
}

// TestAttrsFollowChanges checks that cached attributes never go stale
// across changes made through the mount (they are cached for an hour).
func TestAttrsFollowChanges(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	stat := func() *syscall.Stat_t {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	os.WriteFile(p, []byte("12345"), 0o644)
	st0 := stat()
	if st0.Size != 5 || st0.Nlink != 1 {
		t.Fatalf("size %d nlink %d", st0.Size, st0.Nlink)
	}
	time.Sleep(10 * time.Millisecond)
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("678"))
	f.Close()
	if st := stat(); st.Size != 8 || st.Mtim == st0.Mtim {
		t.Errorf("after append: size %d, mtime changed %v", st.Size, st.Mtim != st0.Mtim)
	}
	os.Link(p, m.path("g"))
	if st := stat(); st.Nlink != 2 {
		t.Errorf("after link: nlink %d", st.Nlink)
	}
	os.Remove(m.path("g"))
	if st := stat(); st.Nlink != 1 {
		t.Errorf("after unlink: nlink %d", st.Nlink)
	}
	os.Truncate(p, 2)
	if st := stat(); st.Size != 2 {
		t.Errorf("after truncate: size %d", st.Size)
	}
	os.Chmod(p, 0o600)
	if st := stat(); st.Mode&0o777 != 0o600 {
		t.Errorf("after chmod: mode %o", st.Mode)
	}
	os.Chown(p, 123, 456)
	if st := stat(); st.Uid != 123 || st.Gid != 456 {
		t.Errorf("after chown: %d:%d", st.Uid, st.Gid)
	}
	mt := time.Unix(1000000000, 0)
	os.Chtimes(p, mt, mt)
	if st := stat(); st.Mtim.Sec != 1000000000 {
		t.Errorf("after utimes: mtime %d", st.Mtim.Sec)
	}
	// Directory sizes and link counts.
	var dst0, dst1 syscall.Stat_t
	syscall.Stat(m.dir, &dst0)
	os.Mkdir(m.path("sub"), 0o755)
	syscall.Stat(m.dir, &dst1)
	if dst1.Nlink != dst0.Nlink+1 {
		t.Errorf("root nlink %d after mkdir, was %d", dst1.Nlink, dst0.Nlink)
	}
}
