package cryptfs

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
)

// Every backing access goes through package backing; these are the few
// descriptor-level calls file.go makes on descriptors it already holds.

func toErrno(err error) syscall.Errno { return backing.Errno(err) }

func fstatx(fd int, st *unix.Statx_t) error { return backing.Fstat(fd, st) }

func pwriteFull(fd int, b []byte, off int64) (int, error) { return backing.PwriteFull(fd, b, off) }

func preadFull(fd int, b []byte, off int64) (int, error) { return backing.PreadFull(fd, b, off) }
