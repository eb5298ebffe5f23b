package backing

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dir is an open directory of a backing folder. All methods take one name
// in it. A Dir is safe for concurrent use; Close it when done.
type Dir struct {
	fd int
	// fence, if set, is checked before every change made through d; the
	// directories opened from d inherit it.
	fence *Fence
}

// statxMask is what every stat here asks for: the basic fields and birth
// time (for inode generations).
const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// OpenRoot opens the backing folder at path (a path the administrator
// chose, so links before its last component are followed; the last one is
// not).
func OpenRoot(path string) (*Dir, error) {
	fd, err := retry(func() (int, error) {
		return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("open backing folder %s: %w", path, dirErr(err))
	}
	return &Dir{fd: fd}, nil
}

// Fd is the directory's descriptor, for calls this package does not wrap
// (fstatfs, getdents through ReadNames). It stays owned by d.
func (d *Dir) Fd() int { return d.fd }

// Close closes the directory.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// checkName refuses anything but one path component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return ErrBadName
	}
	return nil
}

// dirErr turns the errors of an O_DIRECTORY|O_NOFOLLOW open into ours: a
// symlink (ELOOP) or anything else (ENOTDIR) where a directory must be.
func dirErr(err error) error {
	if err == unix.ELOOP || err == unix.ENOTDIR {
		return ErrNotDir
	}
	return err
}

// retry repeats a call interrupted by a signal.
func retry(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// OpenDir opens the directory name in d. A symlink or any other type there
// is ErrNotDir.
func (d *Dir) OpenDir(name string) (*Dir, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, dirErr(err)
	}
	return &Dir{fd: fd, fence: d.fence}, nil
}

// Reopen opens d once more, with a file offset of its own (for listing).
func (d *Dir) Reopen() (*Dir, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, err
	}
	return &Dir{fd: fd, fence: d.fence}, nil
}

// SetFence makes every change through d, and through the directories
// opened from it from now on, check f first. Call it before d is shared.
func (d *Dir) SetFence(f *Fence) { d.fence = f }

// Lstat stats name without following it.
func (d *Dir) Lstat(name string, st *unix.Statx_t) error {
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Statx(d.fd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

// Stat stats the directory itself.
func (d *Dir) Stat(st *unix.Statx_t) error { return Fstat(d.fd, st) }

// Fstat stats an open descriptor.
func Fstat(fd int, st *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

// Sync flushes the directory (new and removed names) to disk.
func (d *Dir) Sync() error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	return unix.Fsync(d.fd)
}

// SyncFS flushes the whole file system that holds d (syncfs(2)): every
// file written below d reaches the disk, which a tree written by many
// calls needs before it is recorded as durable.
func (d *Dir) SyncFS() error { return unix.Syncfs(d.fd) }

// OpenFile opens the regular file name with flags (O_CREAT, O_EXCL and
// O_TRUNC included). The name is never followed, the open never blocks,
// and nothing but a regular file is ever opened: anything else there is
// ErrNotRegular (see openRegular).
func (d *Dir) OpenFile(name string, flags int, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	if flags&(unix.O_CREAT|unix.O_TRUNC) != 0 {
		if err := d.fence.Check(); err != nil {
			return -1, err
		}
	}
	return openRegular(d.fd, name, flags, mode)
}

// OpenTmpFile opens an unnamed regular file in d (O_TMPFILE).
func (d *Dir) OpenTmpFile(flags int, mode uint32) (int, error) {
	if err := d.fence.Check(); err != nil {
		return -1, err
	}
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, ".", flags|unix.O_TMPFILE|unix.O_CLOEXEC, mode)
	})
	if err != nil {
		return -1, err
	}
	return checkRegular(fd)
}

// openRegular opens a regular file without ever opening anything else. A
// file it creates (O_CREAT|O_EXCL) is a new regular file by definition.
// An existing name is first opened O_PATH, which opens nothing (no device
// driver runs, no FIFO waits), and type-checked; the real open then goes
// through that descriptor's /proc/self/fd link, so the entry cannot be
// swapped in between.
func openRegular(dirfd int, name string, flags int, mode uint32) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY
	for try := 0; try < 3; try++ {
		if flags&unix.O_CREAT != 0 {
			fd, err := retry(func() (int, error) { return unix.Openat(dirfd, name, flags|unix.O_EXCL, mode) })
			if err == nil {
				return fd, nil
			}
			if err != unix.EEXIST || flags&unix.O_EXCL != 0 {
				return -1, err
			}
		}
		fd, err := openExisting(dirfd, name, flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW))
		if err == unix.ENOENT && flags&unix.O_CREAT != 0 {
			continue // removed since our O_EXCL try: create it after all
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

func openExisting(dirfd int, name string, flags int) (int, error) {
	pfd, err := retry(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	var st unix.Statx_t
	if err := Fstat(pfd, &st); err != nil {
		return -1, err
	}
	if uint32(st.Mode)&unix.S_IFMT != unix.S_IFREG {
		return -1, ErrNotRegular
	}
	return procErr(retry(func() (int, error) { return unix.Open(procPath(pfd), flags, 0) }))
}

// checkRegular returns fd if it is a regular file, else closes it and
// returns ErrNotRegular.
func checkRegular(fd int) (int, error) {
	var st unix.Statx_t
	if err := Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if uint32(st.Mode)&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, ErrNotRegular
	}
	return fd, nil
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// procErr maps the error of a call through procPath of a descriptor we
// hold. Such a path names an open file, even an unlinked one, so ENOENT
// means /proc is not mounted: an I/O error (ErrNoProc), never "no such
// file", which callers would take for a missing header or IV.
func procErr[T any](v T, err error) (T, error) {
	if err == unix.ENOENT {
		err = ErrNoProc
	}
	return v, err
}

// ReadSmall reads the regular file name whole, refusing one larger than
// max bytes with ErrTooLarge before reading it.
func (d *Dir) ReadSmall(name string, max int) ([]byte, error) {
	fd, err := d.OpenFile(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, max+1)
	n, err := PreadFull(fd, buf, 0)
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, ErrTooLarge
	}
	return buf[:n], nil
}

// WriteNew creates the regular file name (which must not exist) holding
// data, with mode. On failure nothing is left behind.
func (d *Dir) WriteNew(name string, data []byte, mode uint32) error {
	fd, err := d.OpenFile(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = PwriteFull(fd, data, 0)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(d.fd, name, 0)
	}
	return err
}

// WriteAtomic replaces name with a regular file holding data: a temporary
// file is written and fsynced, renamed over name, and the directory is
// fsynced, so a crash leaves the old or the new content, never a mix.
func (d *Dir) WriteAtomic(name string, data []byte, mode uint32) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := fmt.Sprintf(".tmp-%s-%x", name, rnd)
	if len(tmp) > 255 {
		tmp = fmt.Sprintf(".tmp-%x", rnd)
	}
	fd, err := d.OpenFile(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = PwriteFull(fd, data, 0)
	if err == nil {
		err = unix.Fchmod(fd, mode) // past the umask
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return err
	}
	return d.Sync()
}

// Unlink removes the non-directory name (a symlink itself, never its target).
func (d *Dir) Unlink(name string) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Unlinkat(d.fd, name, 0)
}

// Rmdir removes the empty directory name.
func (d *Dir) Rmdir(name string) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR)
}

// Mkdir creates the directory name.
func (d *Dir) Mkdir(name string, mode uint32) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Mkdirat(d.fd, name, mode)
}

// Mknod creates a FIFO, socket, device node or empty regular file.
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Mknodat(d.fd, name, mode, int(dev))
}

// Symlink creates the symlink name pointing at target (which is stored,
// never resolved by securevol).
func (d *Dir) Symlink(target, name string) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Symlinkat(target, d.fd, name)
}

// MaxLinkSize is the longest symlink target Readlink returns; longer (only
// possible on file systems that allow it) is ErrTooLarge.
const MaxLinkSize = 4095

// Readlink returns the target of the symlink name.
func (d *Dir) Readlink(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	buf := make([]byte, MaxLinkSize+1)
	n, err := unix.Readlinkat(d.fd, name, buf)
	if err == unix.EINVAL {
		return "", ErrNotSymlink
	}
	if err != nil {
		return "", err
	}
	if n > MaxLinkSize {
		return "", ErrTooLarge
	}
	return string(buf[:n]), nil
}

// Link makes name in d a new hard link to srcName in src (a symlink there
// is linked itself, never followed).
func (d *Dir) Link(src *Dir, srcName, name string) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(srcName); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Linkat(src.fd, srcName, d.fd, name, 0)
}

// LinkFd gives the open, unnamed file fd (O_TMPFILE, or unlinked while
// open) the name name in d.
func (d *Dir) LinkFd(fd int, name string) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Linkat(fd, "", d.fd, name, unix.AT_EMPTY_PATH)
}

// Rename renames oldName in od to newName in nd (renameat2 flags).
func Rename(od *Dir, oldName string, nd *Dir, newName string, flags uint) error {
	if err := od.fence.Check(); err != nil {
		return err
	}
	if err := nd.fence.Check(); err != nil {
		return err
	}
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	return unix.Renameat2(od.fd, oldName, nd.fd, newName, flags)
}

// Chmod sets the mode of name, never through a symlink (fchmodat2 with
// AT_SYMLINK_NOFOLLOW; before Linux 6.6, an O_PATH descriptor checked to
// be no symlink).
func (d *Dir) Chmod(name string, mode uint32) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	err := unix.Fchmodat(d.fd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP {
		return err
	}
	return d.withPath(name, func(pfd int, st *unix.Statx_t) error {
		if uint32(st.Mode)&unix.S_IFMT == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		_, err := procErr(0, unix.Chmod(procPath(pfd), mode))
		return err
	})
}

// Chown sets the owner of name (-1 keeps one), never through a symlink.
func (d *Dir) Chown(name string, uid, gid int) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// Utimes sets the access and modification times of name, never through a
// symlink.
func (d *Dir) Utimes(name string, ts *[2]unix.Timespec) error {
	if err := d.fence.Check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.UtimesNanoAt(d.fd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

// Futimens sets the times of an open file.
func Futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// withPath runs fn on an O_PATH descriptor of name: it refers to the
// entry itself (a symlink is not followed) and opens nothing.
func (d *Dir) withPath(name string, fn func(pfd int, st *unix.Statx_t) error) error {
	pfd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Statx_t
	if err := Fstat(pfd, &st); err != nil {
		return err
	}
	return fn(pfd, &st)
}

// ReadNames calls fn for each entry of d (including "." and "..") until fn
// returns false. It reads from d's own file offset, which it rewinds
// first: use a Dir of your own (Reopen) when listing concurrently.
func (d *Dir) ReadNames(fn func(name string, ino uint64, typ uint8) bool) error {
	if _, err := unix.Seek(d.fd, 0, 0); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(d.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for b := buf[:n]; len(b) > 0; {
			de := (*unix.Dirent)(unsafe.Pointer(&b[0]))
			reclen := int(de.Reclen)
			nameBytes := b[unsafe.Offsetof(de.Name):reclen]
			for i, c := range nameBytes {
				if c == 0 {
					nameBytes = nameBytes[:i]
					break
				}
			}
			if !fn(string(nameBytes), de.Ino, de.Type) {
				return nil
			}
			b = b[reclen:]
		}
	}
}

// PwriteFull writes all of b at off.
func PwriteFull(fd int, b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Pwrite(fd, b[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, unix.ENOSPC
		}
		done += n
	}
	return done, nil
}

// PreadFull reads until b is full or end of file.
func PreadFull(fd int, b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Pread(fd, b[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
		done += n
	}
	return done, nil
}

// Errno maps an error from this package (or a system call) to the errno a
// FUSE reply carries: every backing-folder violation is EIO.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var be *backingError
	if errors.As(err, &be) {
		return syscall.EIO
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// ReopenFile opens the regular file that fd has open once more, with
// flags (e.g. read-write for a repair through a read-only handle). It goes
// through /proc/self/fd, which reaches the very inode fd holds, even an
// unlinked one, and checks that it did.
func ReopenFile(fd int, flags int) (int, error) {
	nfd, err := procErr(retry(func() (int, error) {
		return unix.Open(procPath(fd), flags|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	}))
	if err != nil {
		return -1, err
	}
	var a, b unix.Statx_t
	if err := Fstat(fd, &a); err != nil || Fstat(nfd, &b) != nil || a.Ino != b.Ino ||
		a.Dev_major != b.Dev_major || a.Dev_minor != b.Dev_minor || uint32(b.Mode)&unix.S_IFMT != unix.S_IFREG {
		unix.Close(nfd)
		return -1, ErrNotRegular
	}
	return nfd, nil
}

// Handle returns the file handle the backing file system gives the entry
// name in d (or d itself for "") for NFS export: its type and bytes, which
// include the file system's inode generation. The name is not followed.
func (d *Dir) Handle(name string) ([]byte, error) {
	return handle(d.fd, name)
}

// FileHandle is Handle of the open file fd.
func FileHandle(fd int) ([]byte, error) { return handle(fd, "") }

func handle(fd int, name string) ([]byte, error) {
	flags := 0
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	} else if err := checkName(name); err != nil {
		return nil, err
	}
	h, _, err := unix.NameToHandleAt(fd, name, flags)
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint32(h.Bytes(), uint32(h.Type())), nil
}
