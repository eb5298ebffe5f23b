package cryptfs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// Helpers of the attack suite (attack_*_test.go): whoever holds a backing
// folder plants symlinks, special files and swapped bytes in it; the worst
// allowed outcome is an error or EIO, never an effect outside the folder,
// never a hang.

// opDeadline bounds every operation an attack runs through the mount: a
// request that has not returned by then hangs.
const opDeadline = 5 * time.Second

var errHung = errors.New("hung: no answer within 5 s")

// within runs fn and returns its error, or errHung if it has not returned
// after d. A hung fn is left running; the test's cleanup unblocks it.
func within(d time.Duration, fn func() error) error { return startOp(d, fn).wait() }

// pendingOp is an operation running in the background, so that several
// which may hang can wait out their deadlines together.
type pendingOp struct {
	done     chan error
	deadline time.Time
}

func startOp(d time.Duration, fn func() error) *pendingOp {
	p := &pendingOp{done: make(chan error, 1), deadline: time.Now().Add(d)}
	go func() { p.done <- fn() }()
	return p
}

// wait returns the operation's error, or errHung at the deadline.
func (p *pendingOp) wait() error {
	select {
	case err := <-p.done:
		return err
	case <-time.After(time.Until(p.deadline)):
		return errHung
	}
}

// treeState describes every entry below a directory by what an attack
// could change: type, mode, owner, size, links, device, times (mtime and
// ctime, which any change of content or inode bumps), content hash,
// symlink target and extended attributes.
type treeState map[string]string

// snapshotTree records the state of root and everything below it, never
// following symlinks and never opening anything but regular files.
func snapshotTree(t testing.TB, root string) treeState {
	t.Helper()
	s := treeState{}
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		s[rel] = describeEntry(t, p)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return s
}

func describeEntry(t testing.TB, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mode=%07o uid=%d gid=%d size=%d nlink=%d rdev=%d mtime=%d.%09d ctime=%d.%09d",
		st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		fmt.Fprintf(&b, " sha256=%x", h.Sum(nil)[:8])
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("readlink %s: %v", p, err)
		}
		fmt.Fprintf(&b, " target=%q", target)
	}
	for _, x := range listXattrs(p) {
		buf := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, x, buf)
		if err != nil {
			fmt.Fprintf(&b, " xattr[%s]:%v", x, err)
			continue
		}
		fmt.Fprintf(&b, " xattr[%s]=%x", x, sha256.Sum256(buf[:n]))
	}
	return b.String()
}

func listXattrs(p string) []string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	var out []string
	for _, x := range strings.Split(string(buf[:n]), "\x00") {
		if x != "" {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// diff lists what changed from s to after, one line per entry.
func (s treeState) diff(after treeState) []string {
	var out []string
	for p, b := range s {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: removed (was %s)", p, b))
		case a != b:
			out = append(out, fmt.Sprintf("%s:\n      before %s\n      after  %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := s[p]; !ok {
			out = append(out, fmt.Sprintf("%s: created (%s)", p, a))
		}
	}
	slices.Sort(out)
	return out
}

// treeWatch reports, through inotify, every access to the entries of some
// directories: it catches opens and reads that leave no trace a snapshot
// could see (an opened device node, a file read outside the folder).
type treeWatch struct {
	t       testing.TB
	fd      int
	dirs    map[int]string // watch descriptor → directory
	only    string         // if set, report only events on this name
	ignored uint32         // event bits not reported
}

// watchTree watches root and every directory below it.
func watchTree(t testing.TB, root string) *treeWatch {
	t.Helper()
	w := newWatch(t)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			w.add(p)
		}
		return nil
	})
	w.events() // our own walk
	return w
}

// watchName watches one entry name of directory dir.
func watchName(t testing.TB, dir, name string) *treeWatch {
	t.Helper()
	w := newWatch(t)
	w.add(dir)
	w.only = name
	return w
}

func newWatch(t testing.TB) *treeWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &treeWatch{t: t, fd: fd, dirs: map[int]string{}}
	t.Cleanup(func() { unix.Close(fd) })
	return w
}

func (w *treeWatch) add(dir string) {
	w.t.Helper()
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_ALL_EVENTS|unix.IN_DONT_FOLLOW)
	if err != nil {
		w.t.Fatalf("inotify watch %s: %v", dir, err)
	}
	w.dirs[wd] = dir
}

var inotifyBits = []struct {
	bit  uint32
	name string
}{
	{unix.IN_ACCESS, "read"}, {unix.IN_MODIFY, "written"}, {unix.IN_ATTRIB, "attributes changed"},
	{unix.IN_CLOSE_WRITE, "closed after writing"}, {unix.IN_CLOSE_NOWRITE, "closed"}, {unix.IN_OPEN, "opened"},
	{unix.IN_MOVED_FROM, "moved away"}, {unix.IN_MOVED_TO, "moved in"}, {unix.IN_CREATE, "created"},
	{unix.IN_DELETE, "deleted"}, {unix.IN_DELETE_SELF, "itself deleted"}, {unix.IN_MOVE_SELF, "itself moved"},
}

// events returns what happened since the last call, one line per event.
func (w *treeWatch) events() []string {
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return out
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(e.Len)]
			off += unix.SizeofInotifyEvent + int(e.Len)
			name := strings.TrimRight(string(nameBytes), "\x00")
			if w.only != "" && name != w.only {
				continue
			}
			var what []string
			for _, b := range inotifyBits {
				if e.Mask&b.bit != 0 && w.ignored&b.bit == 0 {
					what = append(what, b.name)
				}
			}
			if len(what) > 0 {
				out = append(out, fmt.Sprintf("%s: %s", filepath.Join(w.dirs[int(e.Wd)], name), strings.Join(what, ", ")))
			}
		}
	}
}

// backingNameFor is the name plain gets in backing directory dir: its
// encrypted name under the directory's IV (hashed if long).
func (m *testMount) backingNameFor(dir, plain string) string {
	m.t.Helper()
	iv, err := os.ReadFile(filepath.Join(dir, crypto.DirIVName))
	if err != nil {
		m.t.Fatal(err)
	}
	enc, err := m.keys.EncryptName(plain, iv)
	if err != nil {
		m.t.Fatal(err)
	}
	b, _ := crypto.BackingName(enc)
	return b
}

// unblockFIFO lets a reader or writer blocked in open(2) of the FIFO at p
// go on (it then sees end of file or a broken pipe), so a request hung on
// a planted FIFO can end and the mount can be unmounted.
func unblockFIFO(p string) {
	for _, mode := range []int{unix.O_WRONLY, unix.O_RDONLY} {
		if fd, err := unix.Open(p, mode|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
}

// writeFileVia writes data to an existing file through an O_WRONLY open
// and closes it, returning the first error.
func writeFileVia(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// statForced stats p through the mount asking the file system itself,
// not the kernel's attribute cache.
func statForced(p string) error {
	var st unix.Statx_t
	return unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &st)
}
