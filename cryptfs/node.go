package cryptfs

import (
	"context"
	"errors"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// node is every file, directory, symlink and fifo of a mount. As in
// loopback, a node does not store its backing path. A directory keeps an
// open descriptor of its backing directory (see dir), opened through its
// parent's; everything else is reached as (parent's descriptor, own
// encrypted name), the name taken from the Inode tree that go-fuse keeps
// current across renames. So renaming a directory with open children needs
// no fix-ups, no system call ever gets a path of more than one component,
// and hard links simply have several parents, any of which leads to the
// same backing inode.
type node struct {
	fs.Inode
	fsys *fsys

	// Directories: the IV of the backing directory (it never changes: it
	// moves with the directory on rename) and a cache of plaintext name →
	// backing name. Both are pure functions of the directory, so the cache
	// never goes stale; it is only bounded.
	dmu   sync.Mutex
	iv    []byte
	names map[string]string
	// dref is the directory's open backing directory while it is in the
	// mount's cache (see dir and dirCache).
	dref atomic.Pointer[dirRef]

	// Regular files. cmu serializes writes and truncation (which
	// read-modify-write partial blocks) against each other and against
	// reads; reads run in parallel. fc is the file's cipher, derived once
	// from the header; nil for an empty file without header. size is the
	// plaintext size, -1 until known.
	cmu  sync.RWMutex
	hmu  sync.Mutex // loads fc under a read lock
	fc   atomic.Pointer[crypto.FileCipher]
	size atomic.Int64
	// synced is the plaintext size below which the file may hold data
	// that must survive a crash: what it held when its contents were
	// loaded, or at its last fsync. Blocks below it are rewritten in
	// place only through a redo record (recover.go).
	synced atomic.Int64
	// csize is the size of the backing file as the mount's quota last
	// counted it, -1 if not known (quota.go).
	csize atomic.Int64

	// open lists the file's open handles, so that operations the kernel
	// sends without one (fchmod, fchown, futimens, fsetxattr) still reach
	// a file whose last name is gone: unlinked, or renamed over.
	omu  sync.Mutex
	open []*fileHandle
}

func (n *node) addOpen(h *fileHandle) {
	n.omu.Lock()
	n.open = append(n.open, h)
	n.omu.Unlock()
}

// removeOpenLocked forgets h; callers hold omu (see released).
func (n *node) removeOpenLocked(h *fileHandle) {
	for i, o := range n.open {
		if o == h {
			last := len(n.open) - 1
			n.open[i] = n.open[last]
			n.open[last] = nil
			n.open = n.open[:last]
			break
		}
	}
}

// openDup returns a private duplicate of one of n's open descriptors, or
// -1 if none is open; the caller closes it.
func (n *node) openDup() int {
	n.omu.Lock()
	defer n.omu.Unlock()
	if len(n.open) == 0 {
		return -1
	}
	fd, err := unix.FcntlInt(uintptr(n.open[0].fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// maxCachedNames bounds each directory's name cache.
const maxCachedNames = 8192

// maxNameLen is the longest name, as on ext4.
const maxNameLen = 255

func (n *node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// dir returns the open backing directory of directory n and the func that
// gives it back, which the caller calls once done with it. It is opened
// through the parent's, one name at a time, and then kept in the mount's
// cache (dirCache): a descriptor follows its directory across renames, so
// it never goes stale, and no operation ever hands the kernel a path of
// more than one component. Neither depth nor PATH_MAX limits the tree.
func (n *node) dir() (*backing.Dir, func(), syscall.Errno) {
	if n.isRoot() {
		return n.fsys.root, func() {}, 0
	}
	c := &n.fsys.dirs
	if r := n.dref.Load(); c.acquire(r) {
		return r.d, func() { c.release(r) }, 0
	}
	pd, b, release, errno := n.entry()
	if errno != 0 {
		return nil, nil, errno
	}
	d, err := pd.OpenDir(b)
	release()
	if err != nil {
		if errors.Is(err, backing.ErrNotDir) {
			n.fsys.log.WithField("path", n.logPath()).Error("a directory in the backing folder was replaced by another type")
		}
		return nil, nil, backing.Errno(err)
	}
	return d, n.cacheDir(d), 0
}

// cacheDir puts d, just opened, in the mount's cache as n's directory and
// returns the func that gives back the use the caller has of it.
func (n *node) cacheDir(d *backing.Dir) func() {
	c := &n.fsys.dirs
	r := c.add(d, func(r *dirRef) { n.dref.CompareAndSwap(r, nil) })
	if old := n.dref.Swap(r); old != nil {
		c.drop(old) // opened twice at once: the older goes once unused
	}
	return func() { c.release(r) }
}

var _ = (fs.NodeOnForgetter)((*node)(nil))

// OnForget lets a directory's descriptor go once the kernel drops the node.
func (n *node) OnForget() {
	if r := n.dref.Swap(nil); r != nil {
		n.fsys.dirs.drop(r)
	}
}

// entry returns the backing directory holding n, n's name there, and the
// func that gives the directory back. It fails with ENOENT for a node that
// is no longer in any directory (an unlinked file that is still open:
// those are reached through their file descriptor).
func (n *node) entry() (*backing.Dir, string, func(), syscall.Errno) {
	name, parent := n.Parent()
	if parent == nil {
		return nil, "", nil, syscall.ENOENT
	}
	p := parent.Operations().(*node)
	pd, release, errno := p.dir()
	if errno != 0 {
		return nil, "", nil, errno
	}
	b, _, errno := p.backingName(name)
	if errno != 0 {
		release()
		return nil, "", nil, errno
	}
	return pd, b, release, 0
}

// logPath is n's backing path below the backing folder, for log lines
// only (it is never handed to a system call).
func (n *node) logPath() string {
	root := n.Root()
	var segs []string
	for p := n.EmbeddedInode(); p != root; {
		name, parent := p.Parent()
		if parent == nil {
			return "(unlinked)"
		}
		b, _, errno := parent.Operations().(*node).backingName(name)
		if errno != 0 {
			b = "?"
		}
		segs = append(segs, b)
		p = parent
	}
	slices.Reverse(segs)
	if len(segs) == 0 {
		return "."
	}
	return strings.Join(segs, "/")
}

// childLogPath is the backing path of a child with backing name b, for
// log lines only, like logPath.
func (n *node) childLogPath(b string) string {
	if n.isRoot() {
		return b
	}
	return strings.Join([]string{n.logPath(), b}, "/")
}

// backingName maps a plaintext name in directory n to its name on disk.
func (n *node) backingName(name string) (string, bool, syscall.Errno) {
	n.dmu.Lock()
	b, ok := n.names[name]
	iv := n.iv
	n.dmu.Unlock()
	if ok {
		return b, crypto.IsLongName(b), 0
	}
	if iv == nil {
		var errno syscall.Errno
		if iv, errno = n.dirIV(); errno != 0 {
			return "", false, errno
		}
	}
	if len(name) > maxNameLen {
		return "", false, syscall.ENAMETOOLONG // FUSE lets up to 1024 through
	}
	enc, err := n.fsys.keys.EncryptName(name, iv)
	if err != nil {
		return "", false, syscall.EINVAL
	}
	b, long := crypto.BackingName(enc)
	n.cacheName(name, b)
	return b, long, 0
}

func (n *node) cacheName(name, backing string) {
	n.dmu.Lock()
	if n.names == nil || len(n.names) >= maxCachedNames {
		n.names = make(map[string]string)
	}
	n.names[name] = backing
	n.dmu.Unlock()
}

// encodedName is the full encrypted form of name, which a long name's
// sidecar holds.
func (n *node) encodedName(name string) (string, syscall.Errno) {
	iv, errno := n.dirIV()
	if errno != 0 {
		return "", errno
	}
	enc, err := n.fsys.keys.EncryptName(name, iv)
	if err != nil {
		return "", syscall.EINVAL
	}
	return enc, 0
}

// dirIV returns the IV of directory n, reading it on first use. The parent
// lock is not held while reading, so walks up the tree never nest locks.
func (n *node) dirIV() ([]byte, syscall.Errno) {
	n.dmu.Lock()
	iv := n.iv
	n.dmu.Unlock()
	if iv != nil {
		return iv, 0
	}
	d, release, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	iv, errno = n.fsys.loadDirIV(d, n.logPath)
	release()
	if errno != 0 {
		return nil, errno
	}
	n.dmu.Lock()
	if n.iv == nil {
		n.iv = iv
	}
	iv = n.iv
	n.dmu.Unlock()
	return iv, 0
}

// loadDirIV reads the IV of backing directory d. A directory without a
// (complete) IV file but also without entries is what a crash during
// mkdir or rmdir leaves behind: it gets a fresh IV. One with entries
// cannot be read any more; that is reported, never papered over.
func (f *fsys) loadDirIV(d *backing.Dir, where func() string) ([]byte, syscall.Errno) {
	iv, err := backing.ReadDirIV(d)
	if err == nil {
		return iv, 0
	}
	if err != unix.ENOENT && !errors.Is(err, backing.ErrDamaged) {
		f.log.WithField("dir", where()).WithError(err).Error("directory IV unreadable")
		return nil, backing.Errno(err)
	}
	empty, errno := dirIsEmpty(d)
	if errno != 0 {
		return nil, errno
	}
	if !empty {
		f.log.WithField("dir", where()).Error("directory IV missing or damaged; its names cannot be decrypted")
		f.observeAuthFailure()
		return nil, syscall.EIO
	}
	f.changeFile(d, crypto.DirIVName, func() error {
		d.Unlink(crypto.DirIVName)
		iv, err = backing.CreateDirIV(d)
		return err
	})
	if err != nil {
		return nil, backing.Errno(err)
	}
	f.log.WithField("dir", where()).Warn("empty directory had no IV (interrupted mkdir or rmdir); created a new one")
	return iv, 0
}

// dirIsEmpty reports whether backing directory d holds nothing but
// securevol bookkeeping. It lists through a descriptor of its own.
func dirIsEmpty(d *backing.Dir) (bool, syscall.Errno) {
	l, err := d.Reopen()
	if err != nil {
		return false, backing.Errno(err)
	}
	defer l.Close()
	empty := true
	err = l.ReadNames(func(name string, ino uint64, typ uint8) bool {
		if name == "." || name == ".." || crypto.IsInternalName(name) {
			return true
		}
		empty = false
		return false
	})
	return empty, backing.Errno(err)
}

// newChild makes (or, through go-fuse, finds) the node for the backing
// entry b of d and fills out.
func (n *node) newChild(ctx context.Context, d *backing.Dir, b string, st *unix.Statx_t, out *fuse.EntryOut) *fs.Inode {
	n.fsys.fillAttr(st, &out.Attr)
	n.fsys.fillLinkSize(d, b, st, &out.Attr)
	return n.NewInode(ctx, n.fsys.newNode(), n.fsys.stableAttr(func() ([]byte, error) { return d.Handle(b) }, st))
}

// authFailed logs a tamper report and counts it. Only backing (encrypted)
// names appear.
func (f *fsys) authFailed(what, rel string, err error, fields logrus.Fields) {
	f.observeAuthFailure()
	e := f.log.WithField("path", rel)
	if fields != nil {
		e = e.WithFields(fields)
	}
	if errors.Is(err, crypto.ErrAuth) {
		e.Errorf("%s failed authentication: tampered with or corrupt", what)
	} else {
		e.WithError(err).Errorf("%s unreadable", what)
	}
}

func (f *fsys) observeAuthFailure() {
	if f.obs != nil {
		f.obs.AuthFailure()
	}
}

// logWriter routes go-fuse's log lines to logrus.
type logWriter struct {
	e     *logrus.Entry
	level logrus.Level
}

func (w logWriter) Write(p []byte) (int, error) {
	w.e.Log(w.level, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newLogger(e *logrus.Entry, level logrus.Level) *log.Logger {
	return log.New(logWriter{e.WithField("component", "go-fuse"), level}, "", 0)
}
