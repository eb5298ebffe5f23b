package cryptfs

import (
	"bytes"
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// Namespace operations: each computes backing paths and makes one or two
// system calls, as loopback does, plus name encryption.

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
	rel, _, _, errno := n.childPath(name)
	if errno != 0 {
		return nil, errno
	}
	var st unix.Statx_t
	if err := lstatAt(n.fsys.rootFd, rel, &st); err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(ctx, &st, out), 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	var err error
	switch h := f.(type) {
	case *fileHandle:
		// Works for files unlinked while open, too.
		err = fstatx(h.fd, &st)
	case *dirHandle:
		err = fstatx(h.fd, &st)
	default:
		if n.isRoot() {
			err = fstatx(n.fsys.rootFd, &st)
		} else {
			rel, errno := n.relPath()
			if errno != 0 {
				return errno
			}
			err = lstatAt(n.fsys.rootFd, rel, &st)
		}
	}
	if err != nil {
		return toErrno(err)
	}
	n.fsys.fillAttr(&st, &out.Attr)
	if sz := n.size.Load(); sz >= 0 && uint32(st.Mode)&syscall.S_IFMT == syscall.S_IFREG {
		// A write in flight may have grown the backing file partly.
		out.Size = uint64(sz)
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	h, _ := f.(*fileHandle)
	rel := ""
	if h == nil {
		var errno syscall.Errno
		if rel, errno = n.relPath(); errno == syscall.ENOENT {
			// No name left (fchmod of an unlinked file): act on a
			// descriptor the file is open with.
			if fd, orel := n.openDup(); fd >= 0 {
				defer unix.Close(fd)
				h = &fileHandle{fd: fd, rel: orel}
				f, errno = h, 0
			}
		}
		if errno != 0 {
			return errno
		}
	}
	rootFd := n.fsys.rootFd
	if mode, ok := in.GetMode(); ok {
		var err error
		if h != nil {
			err = unix.Fchmod(h.fd, mode)
		} else {
			err = unix.Fchmodat(rootFd, rel, mode, 0)
		}
		if err != nil {
			return toErrno(err)
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
		var err error
		if h != nil {
			err = unix.Fchown(h.fd, u, g)
		} else {
			err = unix.Fchownat(rootFd, rel, u, g, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return toErrno(err)
		}
	}
	// Truncate before setting times, so an explicit mtime survives.
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncate(h, rel, sz); errno != 0 {
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
		var err error
		if h != nil {
			err = futimens(h.fd, &ts)
		} else {
			err = unix.UtimesNanoAt(rootFd, rel, ts[:], unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return toErrno(err)
		}
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
	dir, errno := n.relPath()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	fd, err := openBeneath(n.fsys.rootFd, dir, backingFlags(flags)|unix.O_TMPFILE|int(flags)&unix.O_EXCL, mode&0o7777)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	var st unix.Statx_t
	if err := fstatx(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	n.adopt(ctx, fd, dir, "", &st, mode)
	h := &fileHandle{fd: fd, rel: join(dir, "(unnamed)")}
	child := n.fsys.newNode()
	child.size.Store(0)
	n.fsys.fillAttr(&st, &out.Attr)
	ch := n.NewInode(ctx, child, n.fsys.stableAttr(&st))
	child.addOpen(h)
	return ch, h, openFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	dir, b, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	rel := join(dir, b)
	fd, err := openBeneath(n.fsys.rootFd, rel, backingFlags(flags)|unix.O_CREAT|int(flags)&(unix.O_EXCL|unix.O_TRUNC), mode&0o7777)
	if err != nil {
		n.abandonEntry(dir, b)
		return nil, nil, 0, toErrno(err)
	}
	var st unix.Statx_t
	if err := fstatx(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	n.adopt(ctx, fd, dir, rel, &st, mode)
	h := &fileHandle{fd: fd, rel: rel}
	// The node is new (go-fuse registers it exclusively), so its size
	// is known without another stat on the first write.
	child := n.fsys.newNode()
	child.size.Store(int64(crypto.PlainSize(st.Size)))
	n.fsys.fillAttr(&st, &out.Attr)
	ch := n.NewInode(ctx, child, n.fsys.stableAttr(&st))
	child.addOpen(h)
	return ch, h, openFlags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel, errno := n.relPath()
	if errno != 0 {
		return nil, 0, errno
	}
	fd, err := openBeneath(n.fsys.rootFd, rel, backingFlags(flags), 0)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	h := &fileHandle{fd: fd, rel: rel}
	if flags&syscall.O_TRUNC != 0 {
		// (Kernels without atomic O_TRUNC, which go-fuse does not ask
		// for, send a truncating SETATTR instead.) A read-only open
		// may truncate too, so truncate opens its own descriptor.
		if errno := n.truncate(nil, rel, 0); errno != 0 {
			unix.Close(fd)
			return nil, 0, errno
		}
	}
	n.addOpen(h)
	return h, openFlags, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, b, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	rel := join(dir, b)
	rootFd := n.fsys.rootFd
	// Owner rwx until the IV is in, for a daemon that is not root; adopt
	// sets the requested mode afterwards.
	if err := unix.Mkdirat(rootFd, rel, mode&0o7777|0o700); err != nil {
		n.abandonEntry(dir, b)
		return nil, toErrno(err)
	}
	// The IV goes in before the directory is announced: a directory
	// without IV can hold no names. A crash in between leaves an empty
	// directory without IV, which loadDirIV repairs.
	iv, errno := n.fsys.writeDirIV(rel)
	if errno != 0 {
		unix.Unlinkat(rootFd, rel, unix.AT_REMOVEDIR)
		n.abandonEntry(dir, b)
		return nil, errno
	}
	var st unix.Statx_t
	if err := lstatAt(rootFd, rel, &st); err != nil {
		return nil, toErrno(err)
	}
	n.adopt(ctx, -1, dir, rel, &st, mode)
	child := n.fsys.newNode()
	child.iv = iv
	n.fsys.fillAttr(&st, &out.Attr)
	return n.NewInode(ctx, child, n.fsys.stableAttr(&st)), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFREG:
	case syscall.S_IFCHR, syscall.S_IFBLK:
		// A device node in the backing folder would be live on the host,
		// outside the nodev mount: refuse, as a rootless container would.
		return nil, syscall.EPERM
	default:
		return nil, syscall.EINVAL
	}
	dir, b, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	rel := join(dir, b)
	if err := unix.Mknodat(n.fsys.rootFd, rel, mode, 0); err != nil {
		n.abandonEntry(dir, b)
		return nil, toErrno(err)
	}
	var st unix.Statx_t
	if err := lstatAt(n.fsys.rootFd, rel, &st); err != nil {
		return nil, toErrno(err)
	}
	n.adopt(ctx, -1, dir, rel, &st, mode)
	return n.newChild(ctx, &st, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	sealed, err := n.fsys.keys.SealSymlink(target)
	if err != nil {
		return nil, syscall.ENAMETOOLONG
	}
	dir, b, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	rel := join(dir, b)
	if err := unix.Symlinkat(sealed, n.fsys.rootFd, rel); err != nil {
		n.abandonEntry(dir, b)
		return nil, toErrno(err)
	}
	var st unix.Statx_t
	if err := lstatAt(n.fsys.rootFd, rel, &st); err != nil {
		return nil, toErrno(err)
	}
	n.adopt(ctx, -1, dir, rel, &st, uint32(st.Mode))
	return n.newChild(ctx, &st, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	rel, errno := n.relPath()
	if errno != 0 {
		return nil, errno
	}
	for size := 4096; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(n.fsys.rootFd, rel, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if k < size {
			target, err := n.fsys.keys.OpenSymlink(string(buf[:k]))
			if err != nil {
				n.fsys.authFailed("symlink target", rel, err, nil)
				return nil, syscall.EIO
			}
			return []byte(target), 0
		}
	}
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.fsys != n.fsys {
		return nil, syscall.EXDEV
	}
	trel, errno := t.relPath()
	src, srcPath, flags := n.fsys.rootFd, trel, 0
	if errno != 0 {
		// An O_TMPFILE (or unlinked) file has no backing name: link its
		// open descriptor, as linkat(AT_EMPTY_PATH) does on ext4. The
		// kernel refuses it (ENOENT) for a file that once had a name.
		fd, _ := t.openDup()
		if fd < 0 {
			return nil, syscall.ENOENT
		}
		defer unix.Close(fd)
		src, srcPath, flags = fd, "", unix.AT_EMPTY_PATH
	}
	dir, b, errno := n.prepareEntry(name)
	if errno != 0 {
		return nil, errno
	}
	rel := join(dir, b)
	if err := unix.Linkat(src, srcPath, n.fsys.rootFd, rel, flags); err != nil {
		n.abandonEntry(dir, b)
		return nil, toErrno(err)
	}
	var st unix.Statx_t
	if err := lstatAt(n.fsys.rootFd, rel, &st); err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(ctx, &st, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	rel, b, long, errno := n.childPath(name)
	if errno != 0 {
		return errno
	}
	if err := unix.Unlinkat(n.fsys.rootFd, rel, 0); err != nil {
		return toErrno(err)
	}
	if long {
		n.removeSidecar(b)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	rel, b, long, errno := n.childPath(name)
	if errno != 0 {
		return errno
	}
	if errno := n.fsys.removeEmptyDir(rel, func(rel string) error {
		return unix.Unlinkat(n.fsys.rootFd, rel, unix.AT_REMOVEDIR)
	}); errno != 0 {
		return errno
	}
	if long {
		n.removeSidecar(b)
	}
	return 0
}

// removeEmptyDir runs remove (an rmdir, or a rename over the directory)
// on backing directory rel if it holds only bookkeeping, which it deletes
// first: IV last, and put back if remove fails.
func (f *fsys) removeEmptyDir(rel string, remove func(rel string) error) syscall.Errno {
	fd, err := openBeneath(f.rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	var internal []string
	empty := true
	if errno := readDirNames(fd, func(name string, ino uint64, typ uint8) bool {
		switch {
		case name == "." || name == ".." || name == crypto.DirIVName:
		case crypto.IsInternalName(name):
			internal = append(internal, name)
		default:
			empty = false
			return false
		}
		return true
	}); errno != 0 {
		return errno
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	var iv [crypto.DirIVSize + 1]byte
	ivLen := 0
	if ivFd, err := unix.Openat(fd, crypto.DirIVName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		ivLen, _ = preadFull(ivFd, iv[:], 0)
		unix.Close(ivFd)
	}
	for _, name := range internal {
		unix.Unlinkat(fd, name, 0)
	}
	unix.Unlinkat(fd, crypto.DirIVName, 0)
	if err := remove(rel); err != nil {
		if ivLen == crypto.DirIVSize {
			if ivFd, err := unix.Openat(fd, crypto.DirIVName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444); err == nil {
				pwriteFull(ivFd, iv[:crypto.DirIVSize], 0)
				unix.Close(ivFd)
			}
		}
		return toErrno(err)
	}
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
	oldRel, ob, olong, errno := n.childPath(name)
	if errno != 0 {
		return errno
	}
	newDir, nb, errno := np.prepareEntry(newName)
	if errno != 0 {
		return errno
	}
	newRel := join(newDir, nb)
	if oldRel == newRel {
		return 0
	}
	rootFd := n.fsys.rootFd
	err := unix.Renameat2(rootFd, oldRel, rootFd, newRel, uint(flags))
	if (err == unix.ENOTEMPTY || err == unix.EEXIST) && flags == 0 {
		// The target may be a directory that is empty but for its IV.
		var st unix.Statx_t
		if lstatAt(rootFd, newRel, &st) == nil && uint32(st.Mode)&syscall.S_IFMT == syscall.S_IFDIR {
			errno := n.fsys.removeEmptyDir(newRel, func(string) error {
				return unix.Renameat2(rootFd, oldRel, rootFd, newRel, 0)
			})
			err = nil
			if errno != 0 {
				err = errno
			}
		}
	}
	if err != nil {
		np.abandonEntry(newDir, nb)
		return toErrno(err)
	}
	if olong && flags&unix.RENAME_EXCHANGE == 0 {
		// Renaming one hard link onto another of the same file leaves
		// both names in place.
		var st unix.Statx_t
		if lstatAt(rootFd, oldRel, &st) == unix.ENOENT {
			n.removeSidecar(ob)
		}
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s unix.Statfs_t
	if err := unix.Fstatfs(n.fsys.rootFd, &s); err != nil {
		return toErrno(err)
	}
	out.Blocks = s.Blocks
	out.Bfree = s.Bfree
	out.Bavail = s.Bavail
	out.Files = s.Files
	out.Ffree = s.Ffree
	out.Bsize = uint32(s.Bsize)
	out.Frsize = uint32(s.Frsize)
	out.NameLen = 255 // long names are hashed, so every name ext4 takes fits
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel, errno := n.relPath()
	if errno != 0 {
		return nil, 0, errno
	}
	fd, err := openBeneath(n.fsys.rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	// The kernel may keep listings: every change to a directory passes
	// through it, and it drops a directory's cached listing on each.
	return &dirHandle{n: n, fd: fd, rel: rel}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// prepareEntry returns the backing directory and name for a new entry
// name in n, and for a long name writes its sidecar first: a crash then
// leaves at most an orphaned sidecar, never a name that cannot be listed.
func (n *node) prepareEntry(name string) (dir, backing string, errno syscall.Errno) {
	dir, errno = n.relPath()
	if errno != 0 {
		return "", "", errno
	}
	backing, long, errno := n.backingName(name)
	if errno != 0 {
		return "", "", errno
	}
	if long {
		enc, errno := n.encodedName(name)
		if errno != 0 {
			return "", "", errno
		}
		if errno := n.fsys.writeSidecar(join(dir, crypto.LongNameSidecar(backing)), enc); errno != 0 {
			return "", "", errno
		}
	}
	return dir, backing, 0
}

// abandonEntry undoes prepareEntry after creating the entry failed: a
// long name's sidecar goes unless an entry of that name exists (an
// EEXIST, whose sidecar it is).
func (n *node) abandonEntry(dir, backing string) {
	if !crypto.IsLongName(backing) {
		return
	}
	var st unix.Statx_t
	if lstatAt(n.fsys.rootFd, join(dir, backing), &st) == unix.ENOENT {
		unix.Unlinkat(n.fsys.rootFd, join(dir, crypto.LongNameSidecar(backing)), 0)
	}
}

// writeSidecar stores a long name's encoded form. Its content follows from
// its name, so an existing intact sidecar is left alone.
func (f *fsys) writeSidecar(rel, enc string) syscall.Errno {
	for try := 0; ; try++ {
		fd, err := openBeneath(f.rootFd, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o400)
		if err == unix.EEXIST && try == 0 {
			if old, err := f.readSidecar(rel); err == nil && old == enc {
				return 0
			}
			unix.Unlinkat(f.rootFd, rel, 0)
			continue
		}
		if err != nil {
			return toErrno(err)
		}
		_, err = pwriteFull(fd, []byte(enc), 0)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			unix.Unlinkat(f.rootFd, rel, 0)
			return toErrno(err)
		}
		return 0
	}
}

func (f *fsys) readSidecar(rel string) (string, error) {
	fd, err := openBeneath(f.rootFd, rel, unix.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return readSmall(fd)
}

// readSmall reads a sidecar: an encoded name of at most a few KiB.
func readSmall(fd int) (string, error) {
	buf := make([]byte, 8192)
	k, err := preadFull(fd, buf, 0)
	if err != nil {
		return "", err
	}
	if k == len(buf) {
		return "", crypto.ErrAuth
	}
	return string(bytes.TrimSpace(buf[:k])), nil
}

func (n *node) removeSidecar(backing string) {
	dir, errno := n.relPath()
	if errno != 0 {
		return
	}
	unix.Unlinkat(n.fsys.rootFd, join(dir, crypto.LongNameSidecar(backing)), 0)
}

// adopt gives a new entry the owner and mode a local file system would:
// when we run as root, the caller owns it (the group stays if a setgid
// directory chose it); and mode bits our own umask stripped are restored.
// fd is the open entry or -1, rel its backing path in backing directory
// dir. st is updated.
func (n *node) adopt(ctx context.Context, fd int, dir, rel string, st *unix.Statx_t, mode uint32) {
	f := n.fsys
	rootFd := f.rootFd
	typ := uint32(st.Mode) & syscall.S_IFMT
	chowned := false
	if caller, ok := fuse.FromContext(ctx); ok && f.euid == 0 {
		uid, gid := -1, -1
		if caller.Uid != st.Uid {
			uid = int(caller.Uid)
		}
		if caller.Gid != st.Gid && !f.inheritedGroup(dir, st) {
			gid = int(caller.Gid)
		}
		if uid != -1 || gid != -1 {
			var err error
			if fd >= 0 {
				err = unix.Fchown(fd, uid, gid)
			} else {
				err = unix.Fchownat(rootFd, rel, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err == nil {
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
	var err error
	if fd >= 0 {
		err = unix.Fchmod(fd, newMode)
	} else {
		err = unix.Fchmodat(rootFd, rel, newMode, 0)
	}
	if err == nil {
		st.Mode = uint16(uint32(st.Mode)&syscall.S_IFMT | newMode)
	}
}

// inheritedGroup reports whether a new entry's group came from a setgid
// directory rather than from the daemon.
func (f *fsys) inheritedGroup(dir string, st *unix.Statx_t) bool {
	if st.Gid != f.egid {
		return true
	}
	var dst unix.Statx_t
	var err error
	if dir == "." {
		err = fstatx(f.rootFd, &dst)
	} else {
		err = lstatAt(f.rootFd, dir, &dst)
	}
	return err == nil && dst.Mode&syscall.S_ISGID != 0
}
