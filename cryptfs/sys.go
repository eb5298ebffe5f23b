package cryptfs

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Thin wrappers over the *at system calls. Every backing path is relative
// to the mount's root directory descriptor, so the backing folder can be
// renamed under a running mount and ".." can never climb out of it.

func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// openBeneath opens rel below dirfd refusing symlinks on the way, so a
// symlink planted in the backing folder cannot redirect us elsewhere (the
// kernel resolves plaintext symlinks itself and never asks us to open one).
func openBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH,
	}
	for {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ENOSYS {
			// Kernels before 5.6: openat with O_NOFOLLOW guards the last
			// component, which is the one that can be a symlink.
			return unix.Openat(dirfd, rel, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
		}
		return fd, err
	}
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

func lstatAt(dirfd int, rel string, st *unix.Statx_t) error {
	return unix.Statx(dirfd, rel, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

func fstatx(fd int, st *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

func pwriteFull(fd int, b []byte, off int64) (int, error) {
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

// preadFull reads until b is full or end of file.
func preadFull(fd int, b []byte, off int64) (int, error) {
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

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
