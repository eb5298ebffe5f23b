package cryptfs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// Namespace operations: each names one entry in an open backing directory
// (package backing) and makes one or two system calls, as loopback does,
// plus name encryption.

var (
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeSetattrer)((*node)(nil))
	_ = (fs.NodeCreater)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
	_ = (fs.NodeMkdirer)((*node)(nil))
	_ = (fs.NodeMknoder)((*node)(nil))
	_ = (fs.NodeSymlinker)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
	_ = (fs.NodeLinker)((*node)(nil))
	_ = (fs.NodeUnlinker)((*node)(nil))
	_ = (fs.NodeRmdirer)((*node)(nil))
	_ = (fs.NodeRenamer)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
	_ = (fs.NodeOpendirHandler)((*node)(nil))
)

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d, release, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	b, _, errno := n.backingName(name)
	if errno != 0 {
		return nil, errno
	}
	var st unix.Statx_t
	if err := d.Lstat(b, &st); err != nil {
		return nil, backing.Errno(err)
	}
	return n.newChild(ctx, d, b, &st, out), 0
}

// self is how an operation reaches n's own backing entry: through a
// descriptor of it (a directory's own, an open file's), or else by name in
// its parent directory. A file whose last name is gone (unlinked, or
// renamed over, while open) is reached through a duplicate of one of its
// open descriptors, so fchmod, fchown, futimens and fsetxattr still work.
type self struct {
	fd      int // ≥ 0: the entry itself
	owned   bool
	dir     *backing.Dir
	name    string
	release func() // gives back the directory, if any
	fence   *backing.Fence
}

func (s self) close() {
	if s.owned {
		unix.Close(s.fd)
	}
	if s.release != nil {
		s.release()
	}
}

func (n *node) self(f fs.FileHandle) (self, syscall.Errno) {
	if h, ok := f.(*fileHandle); ok {
		return self{fd: h.fd, fence: n.fsys.fence}, 0
	}
	if n.IsDir() {
		d, release, errno := n.dir()
		if errno != 0 {
			return self{}, errno
		}
		return self{fd: d.Fd(), release: release, fence: n.fsys.fence}, 0
	}
	d, b, release, errno := n.entry()
	if errno == syscall.ENOENT {
		if fd := n.openDup(); fd >= 0 {
			return self{fd: fd, owned: true, fence: n.fsys.fence}, 0
		}
	}
	if errno != 0 {
		return self{}, errno
	}
	return self{fd: -1, dir: d, name: b, release: release, fence: n.fsys.fence}, 0
}

func (s self) stat(st *unix.Statx_t) error {
	if s.fd >= 0 {
		return backing.Fstat(s.fd, st)
	}
	return s.dir.Lstat(s.name, st)
}

func (s self) chmod(mode uint32) error {
	if s.fd >= 0 {
		return s.fence.Fchmod(s.fd, mode)
	}
	return s.dir.Chmod(s.name, mode)
}

func (s self) chown(uid, gid int) error {
	if s.fd >= 0 {
		return s.fence.Fchown(s.fd, uid, gid)
	}
	return s.dir.Chown(s.name, uid, gid)
}

func (s self) utimes(ts *[2]unix.Timespec) error {
	if s.fd >= 0 {
		return s.fence.Futimens(s.fd, ts)
	}
	return s.dir.Utimes(s.name, ts)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	var s self
	if h, ok := f.(*dirHandle); ok {
		s = self{fd: h.d.Fd()}
	} else {
		var errno syscall.Errno
		if s, errno = n.self(f); errno != 0 {
			return errno
		}
		defer s.close()
	}
	if err := s.stat(&st); err != nil {
		return backing.Errno(err)
	}
	n.fsys.fillAttr(&st, &out.Attr)
	if s.dir != nil {
		n.fsys.fillLinkSize(s.dir, s.name, &st, &out.Attr)
	}
	if sz := n.size.Load(); sz >= 0 && uint32(st.Mode)&syscall.S_IFMT == syscall.S_IFREG {
		// A write in flight may have grown the backing file partly.
		out.Size = uint64(sz)
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	s, errno := n.self(f)
	if errno != 0 {
		return errno
	}
	defer s.close()
	if mode, ok := in.GetMode(); ok {
		if err := s.chmod(mode); err != nil {
			return backing.Errno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := s.chown(u, g); err != nil {
			return backing.Errno(err)
		}
	}
	// Truncate before setting times, so an explicit mtime survives.
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncate(s, sz); errno != 0 {
			return errno
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if err := s.utimes(&ts); err != nil {
			return backing.Errno(err)
		}
	}
	if s.owned {
		// An unlinked file: report through its descriptor.
		f = &fileHandle{fd: s.fd}
	}
	if errno := n.Getattr(ctx, f, out); errno != 0 {
		return errno
	}
	// go-fuse's bridge sends SETATTR replies with no attribute timeout, so
	// the kernel would ask GETATTR right after every chmod/chown/utimes.
	out.SetTimeout(n.fsys.attrTimeout)
	return 0
}

// openFlags are the FUSE flags of every open file. We are the only writer,
// so cached pages stay valid across opens (KEEP_CACHE); and nothing is
// buffered in here, so close(2) need not wait for a FLUSH round trip.
const openFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH

// backingFlags turns the open flags of a plaintext open into those of the
// backing open. Writers also need to read (partial blocks are
// read-modify-write); the kernel supplies offsets for O_APPEND; O_DIRECT
// cannot work on 4124-byte ciphertext blocks; O_TRUNC goes through our
// truncate, which also resets the cached file state.
func backingFlags(flags uint32) int {
	f := unix.O_RDONLY
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f = unix.O_RDWR
	}
	return f | int(flags)&(unix.O_SYNC|unix.O_DSYNC)
}

var _ fs.NodeTmpfiler = (*node)(nil)

// Tmpfile answers open(2) with O_TMPFILE: an unnamed backing file in the
// backing directory, encrypted like any other file. It has no name to
// encrypt until it is linked into place (see Link).
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	d, release, errno := n.dir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer release()
	fd, err := d.OpenTmpFile(backingFlags(flags)|int(flags)&unix.O_EXCL, mode&0o7777)
	if err != nil {
		return nil, nil, 0, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := backing.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, backing.Errno(err)
	}
	n.adopt(ctx, d, "", fd, &st, mode)
	h := &fileHandle{fd: fd, rel: n.childLogPath("(unnamed)")}
	child := n.fsys.newNode()
	child.size.Store(0)
	child.csize.Store(0)
	n.fsys.fillAttr(&st, &out.Attr)
	ch := n.NewInode(ctx, child, n.fsys.stableAttr(func() ([]byte, error) { return backing.FileHandle(fd) }, &st))
	child.addOpen(h)
	return ch, h, openFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	d, b, release, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer release()
	fd, err := d.OpenFile(b, backingFlags(flags)|unix.O_CREAT|int(flags)&(unix.O_EXCL|unix.O_TRUNC), mode&0o7777)
	if err != nil {
		n.abandonEntry(d, b)
		return nil, nil, 0, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := backing.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, backing.Errno(err)
	}
	n.adopt(ctx, d, b, fd, &st, mode)
	h := &fileHandle{fd: fd, rel: n.childLogPath(b), appends: flags&syscall.O_APPEND != 0}
	// The node is new (go-fuse registers it exclusively), so its size
	// is known without another stat on the first write.
	child := n.fsys.newNode()
	child.size.Store(int64(crypto.PlainSize(st.Size)))
	child.csize.Store(int64(st.Size))
	n.fsys.fillAttr(&st, &out.Attr)
	ch := n.NewInode(ctx, child, n.fsys.stableAttr(func() ([]byte, error) { return backing.FileHandle(fd) }, &st))
	child.addOpen(h)
	return ch, h, openFlags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	d, b, release, errno := n.entry()
	if errno != 0 {
		return nil, 0, errno
	}
	defer release()
	// Opened and registered under omu, so that an Unlink deciding whether
	// the file is still open (removeEntry) cannot miss this open.
	n.omu.Lock()
	fd, err := d.OpenFile(b, backingFlags(flags), 0)
	if err != nil {
		n.omu.Unlock()
		if errors.Is(err, backing.ErrNotRegular) {
			n.fsys.log.WithField("path", n.logPath()).Error("a file in the backing folder was replaced by another type")
		}
		return nil, 0, backing.Errno(err)
	}
	h := &fileHandle{fd: fd, rel: n.logPath(), appends: flags&syscall.O_APPEND != 0}
	n.open = append(n.open, h)
	n.omu.Unlock()
	if flags&syscall.O_TRUNC != 0 {
		// (Kernels without atomic O_TRUNC, which go-fuse does not ask
		// for, send a truncating SETATTR instead.) A read-only open
		// may truncate too, so truncate opens its own descriptor.
		if errno := n.truncate(self{fd: -1, dir: d, name: b}, 0); errno != 0 {
			n.released(h)
			unix.Close(fd)
			return nil, 0, errno
		}
	}
	return h, openFlags, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pd, b, release, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	defer release()
	cost := int64(backing.DirUsage + crypto.DirIVSize)
	if errno := n.fsys.quota.reserve(cost); errno != 0 {
		n.abandonEntry(pd, b)
		return nil, errno
	}
	// Owner rwx until the IV is in, for a daemon that is not root; adopt
	// sets the requested mode afterwards.
	if err := pd.Mkdir(b, mode&0o7777|0o700); err != nil {
		n.fsys.quota.charge(-cost)
		n.abandonEntry(pd, b)
		return nil, backing.Errno(err)
	}
	// The IV goes in before the directory is announced: a directory
	// without IV can hold no names. A crash in between leaves an empty
	// directory without IV, which loadDirIV repairs.
	d, err := pd.OpenDir(b)
	var iv []byte
	if err == nil {
		if iv, err = backing.CreateDirIV(d); err != nil {
			d.Close()
		}
	}
	if err != nil {
		if pd.Rmdir(b) == nil {
			n.fsys.quota.charge(-cost)
		}
		n.abandonEntry(pd, b)
		return nil, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := d.Stat(&st); err != nil {
		d.Close()
		return nil, backing.Errno(err)
	}
	n.adopt(ctx, pd, b, d.Fd(), &st, mode)
	child := n.fsys.newNode()
	child.iv = iv
	defer child.cacheDir(d)()
	n.fsys.fillAttr(&st, &out.Attr)
	ch := n.NewInode(ctx, child, n.fsys.stableAttr(func() ([]byte, error) { return backing.FileHandle(d.Fd()) }, &st))
	if ch.Operations().(*node) != child {
		// go-fuse found a live node for this inode (it cannot happen for
		// a new directory, but the descriptor must not stay cached).
		child.OnForget()
	}
	return ch, 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFREG, syscall.S_IFCHR, syscall.S_IFBLK:
		// Device nodes are stored as ext4 stores them. The mount is
		// nodev, so they open nothing through it; and securevol never
		// opens one in the backing folder (package backing).
	default:
		return nil, syscall.EINVAL
	}
	d, b, release, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	defer release()
	if err := d.Mknod(b, mode, uint64(dev)); err != nil {
		n.abandonEntry(d, b)
		return nil, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := d.Lstat(b, &st); err != nil {
		return nil, backing.Errno(err)
	}
	n.adopt(ctx, d, b, -1, &st, mode)
	return n.newChild(ctx, d, b, &st, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	stored, blob, err := n.fsys.keys.SealSymlink(target)
	if err != nil {
		return nil, syscall.ENAMETOOLONG
	}
	d, b, release, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	defer release()
	cost := int64(len(stored) + len(blob))
	if errno := n.fsys.quota.reserve(cost); errno != 0 {
		n.abandonEntry(d, b)
		return nil, errno
	}
	if blob != nil {
		// A long target's file goes in first: a crash leaves at most an
		// unreferenced file, never a symlink without its target.
		if err := backing.WriteLongTarget(n.fsys.root, stored, blob); err != nil {
			n.fsys.quota.charge(-cost)
			n.abandonEntry(d, b)
			return nil, backing.Errno(err)
		}
	}
	if err := d.Symlink(stored, b); err != nil {
		n.fsys.quota.charge(-cost)
		n.abandonEntry(d, b)
		if blob != nil {
			n.fsys.root.Unlink(stored)
		}
		return nil, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := d.Lstat(b, &st); err != nil {
		return nil, backing.Errno(err)
	}
	n.adopt(ctx, d, b, -1, &st, uint32(st.Mode))
	return n.newChild(ctx, d, b, &st, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	d, b, release, errno := n.entry()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	stored, blob, err := backing.ReadSymlink(n.fsys.root, d, b)
	if err == nil {
		var target string
		if target, err = n.fsys.keys.OpenSymlink(stored, blob); err == nil {
			return []byte(target), 0
		}
	}
	if err == unix.ENOENT && blob == nil && stored == "" {
		return nil, syscall.ENOENT // the link itself is gone
	}
	n.fsys.authFailed("symlink target", n.logPath(), err, nil)
	return nil, syscall.EIO
}

// freedLongTarget returns the long target's file that removing entry b of
// directory n (plaintext name) leaves unreferenced: b is a symlink with a
// long target and no other hard link. The caller removes that file once
// the entry is gone. Entries known not to be symlinks cost nothing.
func (n *node) freedLongTarget(d *backing.Dir, b, name string) string {
	if c := n.GetChild(name); c != nil && c.Mode()&syscall.S_IFMT != syscall.S_IFLNK {
		return ""
	}
	var st unix.Statx_t
	if d.Lstat(b, &st) != nil || uint32(st.Mode)&syscall.S_IFMT != syscall.S_IFLNK || st.Nlink != 1 {
		return ""
	}
	if stored, err := d.Readlink(b); err == nil && crypto.IsLongTarget(stored) {
		return stored
	}
	return ""
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.fsys != n.fsys {
		return nil, syscall.EXDEV
	}
	td, tb, trelease, errno := t.entry()
	tfd := -1
	if errno == 0 {
		defer trelease()
	} else {
		// An O_TMPFILE (or unlinked) file has no backing name: link its
		// open descriptor, as linkat(AT_EMPTY_PATH) does on ext4. The
		// kernel refuses it (ENOENT) for a file that once had a name.
		if tfd = t.openDup(); tfd < 0 {
			return nil, syscall.ENOENT
		}
		defer unix.Close(tfd)
	}
	d, b, release, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	defer release()
	var err error
	if tfd >= 0 {
		err = d.LinkFd(tfd, b)
	} else {
		err = d.Link(td, tb, b)
	}
	if err != nil {
		n.abandonEntry(d, b)
		return nil, backing.Errno(err)
	}
	var st unix.Statx_t
	if err := d.Lstat(b, &st); err != nil {
		return nil, backing.Errno(err)
	}
	return n.newChild(ctx, d, b, &st, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	d, release, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer release()
	b, long, errno := n.backingName(name)
	if errno != 0 {
		return errno
	}
	freed := n.freedLongTarget(d, b, name)
	if err := n.removeEntry(d, b, name, func() error { return d.Unlink(b) }); err != nil {
		return backing.Errno(err)
	}
	if long {
		n.fsys.removeLongName(d, b)
	}
	if freed != "" {
		n.fsys.removeLongTarget(freed)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	d, release, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer release()
	b, long, errno := n.backingName(name)
	if errno != 0 {
		return errno
	}
	if errno := n.fsys.removeEmptyDir(d, b, func() error { return d.Rmdir(b) }); errno != 0 {
		return errno
	}
	if long {
		n.fsys.removeLongName(d, b)
	}
	return 0
}

// removeEmptyDir runs remove (an rmdir, or a rename over the directory) on
// the backing directory b in pd if it holds only bookkeeping, which it
// deletes first: IV last, and put back if remove fails.
func (f *fsys) removeEmptyDir(pd *backing.Dir, b string, remove func() error) syscall.Errno {
	d, err := pd.OpenDir(b)
	if err != nil {
		return backing.Errno(err)
	}
	defer d.Close()
	var internal []string
	empty := true
	if err := d.ReadNames(func(name string, ino uint64, typ uint8) bool {
		switch {
		case name == "." || name == ".." || name == crypto.DirIVName:
		case crypto.IsInternalName(name):
			internal = append(internal, name)
		default:
			empty = false
			return false
		}
		return true
	}); err != nil {
		return backing.Errno(err)
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	iv, ivErr := backing.ReadDirIV(d)
	for _, name := range internal {
		f.changeFile(d, name, func() error { return d.Unlink(name) })
	}
	ivSize := f.sizeOf(d, crypto.DirIVName)
	d.Unlink(crypto.DirIVName)
	if err := remove(); err != nil {
		if ivErr == nil {
			d.WriteNew(crypto.DirIVName, iv, 0o444)
		}
		f.quota.charge(f.sizeOf(d, crypto.DirIVName) - ivSize)
		return backing.Errno(err)
	}
	f.quota.charge(-ivSize - backing.DirUsage)
	return 0
}

const renameFlags = unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.fsys != n.fsys {
		return syscall.EXDEV
	}
	if flags&^renameFlags != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT is for overlayfs
	}
	od, orelease, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer orelease()
	ob, olong, errno := n.backingName(name)
	if errno != 0 {
		return errno
	}
	nd, nb, nrelease, errno := np.prepareEntry(newName)
	if errno != 0 {
		return errno
	}
	defer nrelease()
	if od == nd && ob == nb {
		return 0
	}
	freed := ""
	if flags&unix.RENAME_EXCHANGE == 0 {
		freed = np.freedLongTarget(nd, nb, newName)
	}
	rename := func() error { return backing.Rename(od, ob, nd, nb, uint(flags)) }
	var err error
	if flags&unix.RENAME_EXCHANGE != 0 {
		err = rename()
	} else {
		err = np.removeEntry(nd, nb, newName, rename)
	}
	if (err == unix.ENOTEMPTY || err == unix.EEXIST) && flags == 0 {
		// The target may be a directory that is empty but for its IV.
		var st unix.Statx_t
		if nd.Lstat(nb, &st) == nil && uint32(st.Mode)&syscall.S_IFMT == syscall.S_IFDIR {
			errno := n.fsys.removeEmptyDir(nd, nb, func() error {
				return backing.Rename(od, ob, nd, nb, 0)
			})
			err = nil
			if errno != 0 {
				err = errno
			}
		}
	}
	if err != nil {
		np.abandonEntry(nd, nb)
		return backing.Errno(err)
	}
	if olong && flags&unix.RENAME_EXCHANGE == 0 {
		// Renaming one hard link onto another of the same file leaves
		// both names in place.
		var st unix.Statx_t
		if od.Lstat(ob, &st) == unix.ENOENT {
			n.fsys.removeLongName(od, ob)
		}
	}
	if freed != "" {
		n.fsys.removeLongTarget(freed)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s unix.Statfs_t
	if err := unix.Fstatfs(n.fsys.root.Fd(), &s); err != nil {
		return backing.Errno(err)
	}
	out.Blocks = s.Blocks
	out.Bfree = s.Bfree
	out.Bavail = s.Bavail
	out.Files = s.Files
	out.Ffree = s.Ffree
	out.Bsize = uint32(s.Bsize)
	out.Frsize = uint32(s.Frsize)
	out.NameLen = 255 // long names are hashed, so every name ext4 takes fits
	n.fsys.quota.statfs(out)
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	d, release, errno := n.dir()
	if errno != 0 {
		return nil, 0, errno
	}
	// A descriptor of its own: a listing has its own offset.
	l, err := d.Reopen()
	release()
	if err != nil {
		return nil, 0, backing.Errno(err)
	}
	// The kernel may keep listings: every change to a directory passes
	// through it, and it drops a directory's cached listing on each.
	return &dirHandle{n: n, d: l}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// prepareEntry returns the backing directory (with the func that gives it
// back) and name for a new entry name in n, and for a long name writes its
// sidecar first: a crash then leaves at most an orphaned sidecar, never a
// name that cannot be listed.
func (n *node) prepareEntry(name string) (*backing.Dir, string, func(), syscall.Errno) {
	d, release, errno := n.dir()
	if errno != 0 {
		return nil, "", nil, errno
	}
	b, long, errno := n.backingName(name)
	if errno == 0 && long {
		var enc string
		if enc, errno = n.encodedName(name); errno == 0 {
			errno = n.fsys.writeLongName(d, b, enc)
		}
	}
	if errno != 0 {
		release()
		return nil, "", nil, errno
	}
	return d, b, release, 0
}

// abandonEntry undoes prepareEntry after creating the entry failed: a
// long name's sidecar goes unless an entry of that name exists (an
// EEXIST, whose sidecar it is).
func (n *node) abandonEntry(d *backing.Dir, b string) {
	if !crypto.IsLongName(b) {
		return
	}
	var st unix.Statx_t
	if d.Lstat(b, &st) == unix.ENOENT {
		n.fsys.removeLongName(d, b)
	}
}

// adopt gives a new entry the owner and mode a local file system would:
// when we run as root, the caller owns it (the group stays if a setgid
// directory chose it); and mode bits our own umask stripped are restored.
// The entry is b in backing directory d, or fd if that is ≥ 0 (an
// O_TMPFILE has no name). st is updated.
func (n *node) adopt(ctx context.Context, d *backing.Dir, b string, fd int, st *unix.Statx_t, mode uint32) {
	f := n.fsys
	s := self{fd: fd, dir: d, name: b}
	typ := uint32(st.Mode) & syscall.S_IFMT
	chowned := false
	if caller, ok := fuse.FromContext(ctx); ok && f.euid == 0 {
		uid, gid := -1, -1
		if caller.Uid != st.Uid {
			uid = int(caller.Uid)
		}
		if caller.Gid != st.Gid && !f.inheritedGroup(d, st) {
			gid = int(caller.Gid)
		}
		if uid != -1 || gid != -1 {
			if err := s.chown(uid, gid); err == nil {
				chowned = true
				if uid != -1 {
					st.Uid = uint32(uid)
				}
				if gid != -1 {
					st.Gid = uint32(gid)
				}
			}
		}
	}
	if typ == syscall.S_IFLNK {
		return
	}
	want := mode & 0o7777
	have := uint32(st.Mode) & 0o7777
	// Keep bits the file system added (setgid inherited by a directory);
	// restore any requested bit that is missing; drop our mkdir's 0700.
	if have&0o777 == want&0o777 && want&^have == 0 && !(chowned && want&0o6000 != 0) {
		return
	}
	newMode := want | have&^0o777
	if typ != syscall.S_IFDIR {
		newMode = want
	}
	if err := s.chmod(newMode); err == nil {
		st.Mode = uint16(uint32(st.Mode)&syscall.S_IFMT | newMode)
	}
}

// inheritedGroup reports whether a new entry's group came from a setgid
// directory d rather than from the daemon.
func (f *fsys) inheritedGroup(d *backing.Dir, st *unix.Statx_t) bool {
	if st.Gid != f.egid {
		return true
	}
	var dst unix.Statx_t
	return d.Stat(&dst) == nil && dst.Mode&syscall.S_ISGID != 0
}
