package cryptfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// statView is what a program sees of one path, reduced to what must agree
// between ext4 and the mount (directory sizes and block counts differ).
type statView struct {
	exists                 bool
	mode, nlink, uid, gid  uint32
	size                   int64
	mtimeMoved, ctimeMoved bool
}

func (v statView) String() string {
	if !v.exists {
		return "absent"
	}
	return fmt.Sprintf("mode %o nlink %d %d:%d size %d mtime-moved %v ctime-moved %v",
		v.mode, v.nlink, v.uid, v.gid, v.size, v.mtimeMoved, v.ctimeMoved)
}

// TestStatMatchesExt4 runs the same steps on a plain directory and on the
// mount, and after each step compares what lstat shows for every path
// involved: with hour-long attribute caches, any operation whose effect
// on attributes the kernel does not learn of shows up here.
func TestStatMatchesExt4(t *testing.T) {
	m := newTestMount(t)
	plain := t.TempDir()
	// Each step runs with the root it acts on; fds are per root.
	type env struct {
		root string
		fds  map[string]*os.File
	}
	p := func(e *env, name string) string { return filepath.Join(e.root, name) }
	steps := []struct {
		name string
		do   func(e *env) error
	}{
		{"mkdir d", func(e *env) error { return os.Mkdir(p(e, "d"), 0o755) }},
		{"mkdir d/sub", func(e *env) error { return os.Mkdir(p(e, "d/sub"), 0o750) }},
		{"create d/f", func(e *env) error { return os.WriteFile(p(e, "d/f"), []byte("hello"), 0o640) }},
		{"open d/f", func(e *env) error {
			f, err := os.OpenFile(p(e, "d/f"), os.O_RDWR, 0)
			e.fds["f"] = f
			return err
		}},
		{"write via fd", func(e *env) error { _, err := e.fds["f"].WriteAt([]byte("world!!"), 3); return err }},
		{"extend via fd", func(e *env) error { _, err := e.fds["f"].WriteAt([]byte("x"), 10000); return err }},
		{"ftruncate", func(e *env) error { return e.fds["f"].Truncate(4097) }},
		{"link d/f d/sub/g", func(e *env) error { return os.Link(p(e, "d/f"), p(e, "d/sub/g")) }},
		{"write via fd after link", func(e *env) error { _, err := e.fds["f"].WriteAt([]byte("abc"), 5000); return err }},
		{"chmod d/sub/g", func(e *env) error { return os.Chmod(p(e, "d/sub/g"), 0o600) }},
		{"chown d/f", func(e *env) error { return os.Lchown(p(e, "d/f"), 12, 34) }},
		{"fchmod", func(e *env) error { return e.fds["f"].Chmod(0o644) }},
		{"setxattr", func(e *env) error { return unix.Setxattr(p(e, "d/f"), "user.a", []byte("v"), 0) }},
		{"removexattr", func(e *env) error { return unix.Removexattr(p(e, "d/f"), "user.a") }},
		{"utimes", func(e *env) error {
			tm := time.Unix(1500000000, 0)
			return os.Chtimes(p(e, "d/f"), tm, tm)
		}},
		{"rename d/f d/h", func(e *env) error { return os.Rename(p(e, "d/f"), p(e, "d/h")) }},
		{"create d/victim", func(e *env) error { return os.WriteFile(p(e, "d/victim"), []byte("v"), 0o644) }},
		{"link d/victim d/sub/v2", func(e *env) error { return os.Link(p(e, "d/victim"), p(e, "d/sub/v2")) }},
		{"rename d/h over d/victim", func(e *env) error { return os.Rename(p(e, "d/h"), p(e, "d/victim")) }},
		{"unlink d/sub/g", func(e *env) error { return os.Remove(p(e, "d/sub/g")) }},
		{"truncate path", func(e *env) error { return os.Truncate(p(e, "d/victim"), 3) }},
		{"symlink", func(e *env) error { return os.Symlink("some/target", p(e, "d/sub/l")) }},
		{"mkfifo", func(e *env) error { return unix.Mkfifo(p(e, "d/fifo"), 0o600) }},
		{"rename dir", func(e *env) error { return os.Rename(p(e, "d/sub"), p(e, "d/sub2")) }},
		{"mkdir d/e", func(e *env) error { return os.Mkdir(p(e, "d/e"), 0o755) }},
		{"mkdir d/empty", func(e *env) error { return os.Mkdir(p(e, "d/empty"), 0o700) }},
		{"rename dir over empty dir", func(e *env) error { return syscall.Rename(p(e, "d/e"), p(e, "d/empty")) }},
		{"write via fd after renames", func(e *env) error { _, err := e.fds["f"].WriteAt([]byte("z"), 0); return err }},
		{"close", func(e *env) error { return e.fds["f"].Close() }},
		{"rmdir d/empty", func(e *env) error { return os.Remove(p(e, "d/empty")) }},
		{"unlink d/victim", func(e *env) error { return os.Remove(p(e, "d/victim")) }},
		{"append", func(e *env) error {
			f, err := os.OpenFile(p(e, "d/fifo2"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			f.Write([]byte("12345"))
			f.Write([]byte("678"))
			return f.Close()
		}},
		{"open O_TRUNC", func(e *env) error {
			f, err := os.OpenFile(p(e, "d/fifo2"), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			return f.Close()
		}},
	}
	paths := []string{".", "d", "d/sub", "d/sub2", "d/e", "d/empty", "d/f", "d/h", "d/victim", "d/sub/g", "d/sub2/g", "d/sub/v2", "d/sub2/v2", "d/sub2/l", "d/fifo", "d/fifo2"}

	type prevTimes map[string][2]unix.Timespec
	view := func(root string, prev prevTimes) map[string]statView {
		out := map[string]statView{}
		for _, rel := range paths {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
				out[rel] = statView{}
				delete(prev, rel)
				continue
			}
			v := statView{exists: true, mode: st.Mode, nlink: uint32(st.Nlink), uid: st.Uid, gid: st.Gid}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				v.size = st.Size
			}
			if old, ok := prev[rel]; ok {
				v.mtimeMoved = old[0] != st.Mtim
				v.ctimeMoved = old[1] != st.Ctim
			}
			prev[rel] = [2]unix.Timespec{st.Mtim, st.Ctim}
			out[rel] = v
		}
		return out
	}
	envs := []*env{{root: plain, fds: map[string]*os.File{}}, {root: m.dir, fds: map[string]*os.File{}}}
	defer func() {
		for _, e := range envs {
			for _, f := range e.fds {
				f.Close()
			}
		}
	}()
	prev := []prevTimes{{}, {}}
	for i := range envs {
		view(envs[i].root, prev[i])
	}
	for _, s := range steps {
		var views [2]map[string]statView
		for i, e := range envs {
			// Timestamps must be able to move between steps.
			time.Sleep(15 * time.Millisecond)
			if err := s.do(e); err != nil {
				t.Fatalf("%s on %s: %v", s.name, e.root, err)
			}
			views[i] = view(e.root, prev[i])
		}
		for _, rel := range paths {
			if views[0][rel] != views[1][rel] {
				t.Errorf("after %q, %s:\n  ext4:  %v\n  mount: %v", s.name, rel, views[0][rel], views[1][rel])
			}
		}
	}
}

// TestOpenFileWithoutName changes and reads a file through descriptors
// after its last name is gone (unlinked, or replaced by a rename), as
// programs do with temporary files.
func TestOpenFileWithoutName(t *testing.T) {
	m := newTestMount(t)
	for _, how := range []string{"unlink", "rename-over"} {
		t.Run(how, func(t *testing.T) {
			p := m.path("tmp-" + how)
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write([]byte("before"))
			switch how {
			case "unlink":
				err = os.Remove(p)
			case "rename-over":
				os.WriteFile(p+".new", []byte("replacement"), 0o644)
				err = os.Rename(p+".new", p)
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte(" and after"), 6); err != nil {
				t.Fatalf("write: %v", err)
			}
			if err := f.Chmod(0o600); err != nil {
				t.Errorf("fchmod: %v", err)
			}
			if err := f.Chown(7, 8); err != nil {
				t.Errorf("fchown: %v", err)
			}
			ts := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
			if err := unix.UtimesNanoAt(int(f.Fd()), "", ts, unix.AT_EMPTY_PATH); err != nil {
				// futimens(fd)
				if err := unix.Futimes(int(f.Fd()), []unix.Timeval{{Sec: 1e9}, {Sec: 1e9}}); err != nil {
					t.Errorf("futimes: %v", err)
				}
			}
			if err := unix.Fsetxattr(int(f.Fd()), "user.x", []byte("y"), 0); err != nil {
				t.Errorf("fsetxattr: %v", err)
			}
			if err := f.Truncate(3); err != nil {
				t.Errorf("ftruncate: %v", err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o777 != 0o600 || st.Uid != 7 || st.Gid != 8 || st.Size != 3 || st.Nlink != 0 {
				t.Errorf("fstat: mode %o owner %d:%d size %d nlink %d", st.Mode&0o777, st.Uid, st.Gid, st.Size, st.Nlink)
			}
			buf := make([]byte, 100)
			n, _ := f.ReadAt(buf, 0)
			if string(buf[:n]) != "bef" {
				t.Errorf("read %q", buf[:n])
			}
			if how == "rename-over" {
				checkContent(t, p, []byte("replacement"))
			}
		})
	}
}

// TestReadOnlyTruncatingOpen: Linux truncates on open(O_RDONLY|O_TRUNC)
// when the caller may write.
func TestReadOnlyTruncatingOpen(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	os.WriteFile(p, []byte("content"), 0o644)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("open(O_RDONLY|O_TRUNC): %v", err)
	}
	unix.Close(fd)
	checkContent(t, p, nil)
}

// TestConcurrentThroughLinks races writers through two hard links,
// truncation and readers on one inode; every partial-block update must
// stay whole, so the result is exactly the last state.
func TestConcurrentThroughLinks(t *testing.T) {
	m := newTestMount(t)
	os.Mkdir(m.path("d"), 0o755)
	if err := os.WriteFile(m.path("a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path("a"), m.path("d/b")); err != nil {
		t.Fatal(err)
	}
	const writers, chunk, rounds = 6, 700, 150
	size := writers * chunk * rounds
	want := pattern(11, size)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	startInterleavedWriters(&wg, errs, []string{m.path("a"), m.path("d/b")}, want, writers, chunk, rounds)
	// Truncation to beyond the final size races the writers: it may
	// only ever extend with zeros or cut what is later rewritten.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var st unix.Stat_t
			if err := unix.Stat(m.path("d/b"), &st); err != nil {
				errs <- err
				return
			}
			if st.Size < 0 || st.Size > int64(size) {
				errs <- fmt.Errorf("stat size %d", st.Size)
				return
			}
		}
	}()
	go func() {
		defer bg.Done()
		fd, err := unix.Open(m.path("d/b"), unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			errs <- err
			return
		}
		defer unix.Close(fd)
		buf := make([]byte, 64<<10)
		for off := 0; ; off = (off + 12345) % size {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := unix.Pread(fd, buf, int64(off)); err != nil {
				errs <- fmt.Errorf("read during writes: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkContent(t, m.path("a"), want)
	checkContent(t, m.path("d/b"), want)
	m.remount()
	checkContent(t, m.path("d/b"), want)
}

// TestConcurrentTruncateAndWrite: one descriptor keeps writing unaligned
// records while another process truncates the file to odd sizes; at the
// end the file must read without error and hold, past the last
// truncation, exactly what was written.
func TestConcurrentTruncateAndWrite(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	os.WriteFile(p, nil, 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			os.Truncate(p, int64((i*7919)%20000))
		}
	}()
	rec := pattern(5, 3000)
	for i := 0; ; i++ {
		select {
		case <-done:
			goto out
		default:
		}
		if _, err := f.WriteAt(rec, int64((i*1237)%15000)); err != nil {
			t.Fatal(err)
		}
	}
out:
	// Whatever the interleaving, every block must authenticate.
	if _, err := os.ReadFile(p); err != nil {
		t.Fatalf("read after races: %v", err)
	}
	f.Truncate(0)
	f.WriteAt(rec, 4000)
	f.Close()
	want := append(make([]byte, 4000), rec...)
	checkContent(t, p, want)
	m.remount()
	checkContent(t, p, want)
}

// TestConcurrentAppenders has several processes' worth of descriptors
// append fixed records with O_APPEND: no record may be lost or torn.
func TestConcurrentAppenders(t *testing.T) {
	m := newTestMount(t)
	p := m.path("log")
	const writers, records, recLen = 6, 200, 37
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for r := 0; r < records; r++ {
				line := fmt.Sprintf("w%d r%04d ", w, r)
				line += strings.Repeat(string(rune('a'+w)), recLen-len(line)-1) + "\n"
				if _, err := f.Write([]byte(line)); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	check := func() {
		t.Helper()
		data := readFile(t, p)
		if len(data) != writers*records*recLen {
			t.Fatalf("size %d, want %d", len(data), writers*records*recLen)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		sort.Strings(lines)
		for i := 1; i < len(lines); i++ {
			if lines[i] == lines[i-1] || len(lines[i]) != recLen-1 {
				t.Fatalf("bad record %q", lines[i])
			}
		}
	}
	check()
	m.remount()
	check()
}

// TestSizeAcrossDescriptors: a write through one descriptor is seen at
// once by stat and by reads through others, including after truncation.
func TestSizeAcrossDescriptors(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	w, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.Link(p, m.path("g"))
	for i, sz := range []int64{1, 5000, 4096, 100000, 7, 0, 8193} {
		cur, _ := r.Stat()
		if sz > cur.Size() {
			w.WriteAt(pattern(i, int(sz-cur.Size())), cur.Size())
		} else {
			w.Truncate(sz)
		}
		for _, name := range []string{p, m.path("g")} {
			fi, err := os.Stat(name)
			if err != nil || fi.Size() != sz {
				t.Fatalf("step %d: stat %s: %v size %d, want %d", i, name, err, fi.Size(), sz)
			}
		}
		var st unix.Stat_t
		unix.Fstat(int(r.Fd()), &st)
		if st.Size != sz {
			t.Fatalf("step %d: fstat %d, want %d", i, st.Size, sz)
		}
		buf := make([]byte, sz+10)
		n, _ := r.ReadAt(buf, 0)
		if int64(n) != sz {
			t.Fatalf("step %d: read %d bytes, want %d", i, n, sz)
		}
	}
}

// TestFailedCreateLeavesNoSidecar: an entry with a long name gets its
// sidecar first; when creating the entry itself then fails (here: the
// backing file system is out of inodes, and the sidecar took the last),
// the sidecar must go too, or fsck reports a sidecar without its entry.
func TestFailedCreateLeavesNoSidecar(t *testing.T) {
	testenv.RequireFUSE(t)
	small := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=8m,nr_inodes=64"); err != nil {
		testenv.Missing(t, fmt.Sprintf("mount tmpfs: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	m := newTestMountIn(t, small)
	// Use up every inode.
	var fillers []string
	for i := 0; ; i++ {
		p := m.path(fmt.Sprintf("x%d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			if !isErrno(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		fillers = append(fillers, p)
	}
	long := strings.Repeat("L", 200)
	for i, c := range []struct {
		op string
		do func(p string) error
	}{
		{"create", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"mkdir", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"symlink", func(p string) error { return os.Symlink("t", p) }},
		{"mkfifo", func(p string) error { return unix.Mkfifo(p, 0o644) }},
	} {
		// One inode free: the sidecar's (a failed attempt gives it back).
		if i == 0 {
			if err := os.Remove(fillers[len(fillers)-1]); err != nil {
				t.Fatal(err)
			}
		}
		err := c.do(m.path(fmt.Sprintf("%s%d", long, i)))
		if !isErrno(err, syscall.ENOSPC) {
			t.Fatalf("%s with one inode left: %v, want ENOSPC", c.op, err)
		}
		matches, _ := filepath.Glob(filepath.Join(m.backing, "*"+crypto.LongNameSuffix))
		if len(matches) != 0 {
			t.Fatalf("%s failed but left %d sidecars: %v", c.op, len(matches), matches)
		}
	}
}
