package backing

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Each is also an I/O error (errors.Is(err, unix.EIO)),
// so a FUSE operation that meets one answers EIO without a mapping table:
// whatever an attacker planted, the most a reader sees is EIO.
var (
	// ErrNotRegular: a name that must be a regular file is something else
	// (a symlink, FIFO, socket, device or directory).
	ErrNotRegular = newError("not a regular file")
	// ErrNotDir: a name that must be a directory is something else.
	ErrNotDir = newError("not a directory")
	// ErrBadName: a name is empty, ".", "..", or holds '/' or NUL. Backing
	// names are always one path component.
	ErrBadName = newError("not a single path component")
	// ErrTooLarge: a small bookkeeping file (header, IV, sidecar) is larger
	// than any that securevol writes.
	ErrTooLarge = newError("larger than securevol ever writes")
	// ErrDamaged: a bookkeeping file has the wrong size.
	ErrDamaged = newError("damaged bookkeeping file")
	// ErrNotSymlink: a name that must be a symlink is something else.
	ErrNotSymlink = newError("not a symlink")
	// ErrNoProc: /proc is not mounted, and existing files are opened
	// through /proc/self/fd (see openRegular).
	ErrNoProc = newError("cannot reopen through /proc/self/fd: is /proc mounted?")
	// ErrFenced: the folder is shared and this node may no longer write
	// it (see Fence).
	ErrFenced = newError("fenced: this node no longer holds the volume (its cluster lease is lost)")
)

// ErrReadOnly: a change through a read-only mount (see ReadOnlyFence).
// Unlike the others it is an EROFS (Errno answers that), which is what
// the writer should see.
var ErrReadOnly = fmt.Errorf("backing folder: read-only mount: %w", unix.EROFS)

// errShared: a header file has other names than ours (see zeroAndSync).
var errShared = newError("header file has other links")

type backingError struct{ msg string }

func newError(msg string) error { return &backingError{msg} }

func (e *backingError) Error() string { return "backing folder: " + e.msg }

// Is makes every backing error an EIO as well.
func (e *backingError) Is(target error) bool { return target == unix.EIO }

func isExist(err error) bool { return err == unix.EEXIST }
