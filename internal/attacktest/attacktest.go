// Package attacktest holds what the attack suites of several packages
// share (issue 7: whoever holds a backing folder is hostile): deadlines for
// operations that may hang, snapshots of a file tree that show any change,
// and inotify watches that show any access, even one that changes nothing.
package attacktest

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
)

// Deadline bounds every operation an attack runs: one that has not
// returned by then hangs.
const Deadline = 5 * time.Second

// ErrHung is what Op.Wait returns for an operation still running at its
// deadline.
var ErrHung = errors.New("hung: no answer within 5 s")

// Op is an operation running in the background, so that several which
// may hang can wait out their deadlines together.
type Op struct {
	done     chan error
	finished chan struct{}
	deadline time.Time
}

// Start runs fn in the background with Deadline.
func Start(fn func() error) *Op {
	o := &Op{done: make(chan error, 1), finished: make(chan struct{}), deadline: time.Now().Add(Deadline)}
	go func() {
		err := fn()
		o.done <- err
		close(o.finished)
	}()
	return o
}

// Within runs fn and returns its error, or ErrHung after Deadline. A hung
// fn is left running; the caller's cleanup must unblock it.
func Within(fn func() error) error { return Start(fn).Wait() }

// Wait returns the operation's error, or ErrHung at the deadline.
func (o *Op) Wait() error {
	select {
	case err := <-o.done:
		return err
	case <-time.After(time.Until(o.deadline)):
		return ErrHung
	}
}

// Finished reports whether the operation has returned.
func (o *Op) Finished() bool {
	select {
	case <-o.finished:
		return true
	default:
		return false
	}
}

// UnblockFIFO lets a reader or writer blocked in open(2) of the FIFO at p
// go on (it then sees end of file or a broken pipe), so that an operation
// hung on a planted FIFO can end.
func UnblockFIFO(p string) {
	for _, mode := range []int{unix.O_WRONLY, unix.O_RDONLY} {
		if fd, err := unix.Open(p, mode|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
}

// UnblockUntil calls UnblockFIFO on every path until every op has
// finished, for up to Deadline; for test cleanups.
func UnblockUntil(ops []*Op, paths ...string) {
	for end := time.Now().Add(Deadline); time.Now().Before(end); {
		for _, p := range paths {
			UnblockFIFO(p)
		}
		if !slices.ContainsFunc(ops, func(o *Op) bool { return !o.Finished() }) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Tree describes every entry below a directory by what an attack could
// change: type, mode, owner, size, links, device, times (mtime and ctime,
// which any change of content or inode bumps), content hash, symlink
// target and extended attributes.
type Tree map[string]string

// Snapshot records the state of root and everything below it, never
// following symlinks and never opening anything but regular files.
func Snapshot(t testing.TB, root string) Tree {
	t.Helper()
	s := Tree{}
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		s[rel] = describe(t, p)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return s
}

func describe(t testing.TB, p string) string {
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

// Diff lists what changed from s to after, one line per entry.
func (s Tree) Diff(after Tree) []string {
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

// Watch reports, through inotify, every access to the entries of some
// directories: it catches opens and reads that leave no trace a snapshot
// could see (an opened device node, a file read outside the folder).
type Watch struct {
	t    testing.TB
	fd   int
	dirs map[int]string // watch descriptor → directory
	only string         // if set, report only events on this name
}

// WatchTree watches root and every directory below it.
func WatchTree(t testing.TB, root string) *Watch {
	t.Helper()
	w := newWatch(t)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			w.add(p)
		}
		return nil
	})
	w.Events() // our own walk
	return w
}

// WatchName watches the entry name of directory dir, whatever its type.
func WatchName(t testing.TB, dir, name string) *Watch {
	t.Helper()
	w := newWatch(t)
	w.add(dir)
	w.only = name
	return w
}

func newWatch(t testing.TB) *Watch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &Watch{t: t, fd: fd, dirs: map[int]string{}}
	t.Cleanup(func() { unix.Close(fd) })
	return w
}

func (w *Watch) add(dir string) {
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

// Uses returns the events that use an entry: everything but a bare close.
// A close whose open the watch did not see (a descriptor opened before the
// watch began: a late FUSE RELEASE, the test's own walk) is no use of the
// entry during the operation; any use opens it first, and that is seen.
func (w *Watch) Uses() []string {
	var out []string
	for _, e := range w.Events() {
		if !strings.HasSuffix(e, ": closed after writing") && !strings.HasSuffix(e, ": closed") {
			out = append(out, e)
		}
	}
	return out
}

// Events returns what happened since the last call, one line per event.
func (w *Watch) Events() []string {
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
				if e.Mask&b.bit != 0 {
					what = append(what, b.name)
				}
			}
			if len(what) > 0 {
				out = append(out, fmt.Sprintf("%s: %s", filepath.Join(w.dirs[int(e.Wd)], name), strings.Join(what, ", ")))
			}
		}
	}
}
