package cryptfs

import (
	"context"
	"errors"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// node is every file, directory, symlink and fifo of a mount. As in
// loopback, a node does not store its backing path: it is computed by
// walking up the Inode tree that go-fuse keeps current across renames,
// encrypting each name with its parent's IV. So renaming a directory with
// open children needs no fix-ups, and hard links simply have several
// parents, any of which leads to the same backing inode.
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

	// Regular files. cmu serializes writes and truncation (which
	// read-modify-write partial blocks) against each other and against
	// reads; reads run in parallel. fc is the file's cipher, derived once
	// from the header; nil for an empty file without header. size is the
	// plaintext size, -1 until known.
	cmu  sync.RWMutex
	hmu  sync.Mutex // loads fc under a read lock
	fc   atomic.Pointer[crypto.FileCipher]
	size atomic.Int64

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

func (n *node) removeOpen(h *fileHandle) {
	n.omu.Lock()
	for i, o := range n.open {
		if o == h {
			last := len(n.open) - 1
			n.open[i] = n.open[last]
			n.open[last] = nil
			n.open = n.open[:last]
			break
		}
	}
	n.omu.Unlock()
}

// openDup returns a private duplicate of one of n's open descriptors, or
// -1 if none is open; the caller closes it.
func (n *node) openDup() (int, string) {
	n.omu.Lock()
	defer n.omu.Unlock()
	if len(n.open) == 0 {
		return -1, ""
	}
	h := n.open[0]
	fd, err := unix.FcntlInt(uintptr(h.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, ""
	}
	return fd, h.rel
}

// maxCachedNames bounds each directory's name cache.
const maxCachedNames = 8192

// maxNameLen is the longest name, as on ext4.
const maxNameLen = 255

func (n *node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// relPath returns the backing path of n relative to the backing root. It
// fails with ENOENT for a node that is no longer in any directory (an
// unlinked file that is still open: those are reached through their file
// descriptor).
func (n *node) relPath() (string, syscall.Errno) {
	root := n.Root()
	p := n.EmbeddedInode()
	if p == root {
		return ".", 0
	}
	var buf [16]string
	segs := buf[:0]
	size := 0
	for p != root {
		name, parent := p.Parent()
		if parent == nil {
			return "", syscall.ENOENT
		}
		b, _, errno := parent.Operations().(*node).backingName(name)
		if errno != 0 {
			return "", errno
		}
		segs = append(segs, b)
		size += len(b) + 1
		p = parent
	}
	var sb strings.Builder
	sb.Grow(size)
	for i := len(segs) - 1; i >= 0; i-- {
		sb.WriteString(segs[i])
		if i > 0 {
			sb.WriteByte('/')
		}
	}
	return sb.String(), 0
}

// childPath is the backing path of name in directory n.
func (n *node) childPath(name string) (rel, backing string, long bool, errno syscall.Errno) {
	dir, errno := n.relPath()
	if errno != 0 {
		return "", "", false, errno
	}
	backing, long, errno = n.backingName(name)
	if errno != 0 {
		return "", "", false, errno
	}
	return join(dir, backing), backing, long, 0
}

func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
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
	rel, errno := n.relPath()
	if errno != 0 {
		return nil, errno
	}
	iv, errno = n.fsys.loadDirIV(rel)
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

// loadDirIV reads the IV of backing directory rel. A directory without a
// (complete) IV file but also without entries is what a crash during
// mkdir or rmdir leaves behind: it gets a fresh IV. One with entries
// cannot be read any more; that is reported, never papered over.
func (f *fsys) loadDirIV(rel string) ([]byte, syscall.Errno) {
	p := join(rel, crypto.DirIVName)
	fd, err := openBeneath(f.rootFd, p, unix.O_RDONLY, 0)
	if err == nil {
		var iv [crypto.DirIVSize + 1]byte
		n, rerr := preadFull(fd, iv[:], 0)
		unix.Close(fd)
		if rerr == nil && n == crypto.DirIVSize {
			return append([]byte(nil), iv[:crypto.DirIVSize]...), 0
		}
	} else if err != unix.ENOENT {
		return nil, toErrno(err)
	}
	empty, errno := f.dirIsEmpty(rel)
	if errno != 0 {
		return nil, errno
	}
	if !empty {
		f.log.WithField("dir", rel).Error("directory IV missing or damaged; its names cannot be decrypted")
		return nil, syscall.EIO
	}
	unix.Unlinkat(f.rootFd, p, 0)
	iv, errno := f.writeDirIV(rel)
	if errno == 0 {
		f.log.WithField("dir", rel).Warn("empty directory had no IV (interrupted mkdir or rmdir); created a new one")
	}
	return iv, errno
}

// writeDirIV creates the IV file of a new backing directory.
func (f *fsys) writeDirIV(rel string) ([]byte, syscall.Errno) {
	iv, err := crypto.NewDirIV()
	if err != nil {
		return nil, syscall.EIO
	}
	fd, err := openBeneath(f.rootFd, join(rel, crypto.DirIVName), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o444)
	if err != nil {
		return nil, toErrno(err)
	}
	_, err = pwriteFull(fd, iv, 0)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(f.rootFd, join(rel, crypto.DirIVName), 0)
		return nil, toErrno(err)
	}
	return iv, 0
}

// dirIsEmpty reports whether backing directory rel holds nothing but
// securevol bookkeeping.
func (f *fsys) dirIsEmpty(rel string) (bool, syscall.Errno) {
	fd, err := openBeneath(f.rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false, toErrno(err)
	}
	defer unix.Close(fd)
	empty := true
	errno := readDirNames(fd, func(name string, ino uint64, typ uint8) bool {
		if name == "." || name == ".." || crypto.IsInternalName(name) {
			return true
		}
		empty = false
		return false
	})
	return empty, errno
}

// readDirNames calls fn for each entry of the open directory fd until fn
// returns false.
func readDirNames(fd int, fn func(name string, ino uint64, typ uint8) bool) syscall.Errno {
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return toErrno(err)
		}
		if n <= 0 {
			return 0
		}
		for b := buf[:n]; len(b) > 0; {
			d := (*unix.Dirent)(unsafe.Pointer(&b[0]))
			reclen := int(d.Reclen)
			nameBytes := b[unsafe.Offsetof(d.Name):reclen]
			if i := indexByte(nameBytes, 0); i >= 0 {
				nameBytes = nameBytes[:i]
			}
			if !fn(string(nameBytes), d.Ino, d.Type) {
				return 0
			}
			b = b[reclen:]
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// newChild makes (or, through go-fuse, finds) the node for a backing
// entry and fills out.
func (n *node) newChild(ctx context.Context, st *unix.Statx_t, out *fuse.EntryOut) *fs.Inode {
	n.fsys.fillAttr(st, &out.Attr)
	return n.NewInode(ctx, n.fsys.newNode(), n.fsys.stableAttr(st))
}

// authFailed logs a tamper report. Only backing (encrypted) names appear.
func (f *fsys) authFailed(what, rel string, err error, fields logrus.Fields) {
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
