package backing

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Fence stops the writes of a node that may no longer write a shared
// backing folder: in a cluster, one whose mount lease is lost (another
// node may own the folder by now). Every write of a Dir that carries a
// fence (SetFence), and every write to a file descriptor that cryptfs
// makes, asks Check just before its system call; once the fence has
// tripped, Check fails for good.
//
// It trips when told (Trip) or by itself once its deadline passes. The
// deadline is read on the monotonic clock, which runs on while the process
// is stopped (SIGSTOP) or starved: a node that resumes after a pause longer
// than its lease finds its fence tripped before its first write, without
// having to hear from anyone.
//
// What Check cannot close is the window between a Check that passes and
// the system call after it: a process paused exactly there writes once
// when it resumes (docs/FORMAT.md, "Cluster mode").
//
// A read-only mount carries ReadOnlyFence instead, which refuses every
// change from the start.
type Fence struct {
	base     time.Time    // with a monotonic reading; deadline counts from it
	deadline atomic.Int64 // nanoseconds after base
	tripped  atomic.Bool
	readOnly bool // refuse every change with ErrReadOnly
}

// ReadOnlyFence returns a fence that refuses every change with
// ErrReadOnly (an EROFS): the fence of a read-only mount, whose folder
// may be another node's or another mount's to write.
func ReadOnlyFence() *Fence { return &Fence{readOnly: true} }

// NewFence returns a fence that trips at deadline unless Extend moves it.
func NewFence(deadline time.Time) *Fence {
	f := &Fence{base: time.Now()}
	f.deadline.Store(int64(deadline.Sub(f.base)))
	return f
}

// Extend moves the deadline to t if that is later; a tripped fence stays
// tripped.
func (f *Fence) Extend(t time.Time) {
	d := int64(t.Sub(f.base))
	for {
		old := f.deadline.Load()
		if d <= old || f.deadline.CompareAndSwap(old, d) {
			return
		}
	}
}

// Trip trips the fence now.
func (f *Fence) Trip() { f.tripped.Store(true) }

// Tripped reports whether the fence has tripped (tripping it if its
// deadline has passed).
func (f *Fence) Tripped() bool { return f.Check() != nil }

// Check answers ErrFenced (an EIO) once the fence has tripped or its
// deadline has passed, and ErrReadOnly always for a ReadOnlyFence. A nil
// fence never trips: a single host's folders are its own.
func (f *Fence) Check() error {
	if f == nil {
		return nil
	}
	if f.readOnly {
		return ErrReadOnly
	}
	if !f.tripped.Load() {
		if int64(time.Since(f.base)) < f.deadline.Load() {
			return nil
		}
		f.tripped.Store(true)
	}
	return ErrFenced
}

// The writes to an open file's descriptor, each after a Check. A nil
// fence writes unchecked, as the package functions do.

// PwriteFull is PwriteFull after a Check.
func (f *Fence) PwriteFull(fd int, b []byte, off int64) (int, error) {
	if err := f.Check(); err != nil {
		return 0, err
	}
	return PwriteFull(fd, b, off)
}

// Pwritev is one pwritev(2) after a Check.
func (f *Fence) Pwritev(fd int, iov [][]byte, off int64) (int, error) {
	if err := f.Check(); err != nil {
		return 0, err
	}
	return unix.Pwritev(fd, iov, off)
}

// Ftruncate is ftruncate(2) after a Check.
func (f *Fence) Ftruncate(fd int, size int64) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Ftruncate(fd, size)
}

// Fallocate is fallocate(2) after a Check.
func (f *Fence) Fallocate(fd int, mode uint32, off, length int64) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Fallocate(fd, mode, off, length)
}

// Fsync is fsync(2), or fdatasync(2) if data, after a Check: a fenced
// node's flush could land after another node's writes.
func (f *Fence) Fsync(fd int, data bool) error {
	if err := f.Check(); err != nil {
		return err
	}
	if data {
		return unix.Fdatasync(fd)
	}
	return unix.Fsync(fd)
}

// Fchmod is fchmod(2) after a Check.
func (f *Fence) Fchmod(fd int, mode uint32) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Fchmod(fd, mode)
}

// Fchown is fchown(2) after a Check.
func (f *Fence) Fchown(fd, uid, gid int) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Fchown(fd, uid, gid)
}

// Futimens is Futimens after a Check.
func (f *Fence) Futimens(fd int, ts *[2]unix.Timespec) error {
	if err := f.Check(); err != nil {
		return err
	}
	return Futimens(fd, ts)
}

// Fsetxattr is fsetxattr(2) after a Check.
func (f *Fence) Fsetxattr(fd int, attr string, data []byte, flags int) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Fsetxattr(fd, attr, data, flags)
}

// Fremovexattr is fremovexattr(2) after a Check.
func (f *Fence) Fremovexattr(fd int, attr string) error {
	if err := f.Check(); err != nil {
		return err
	}
	return unix.Fremovexattr(fd, attr)
}

// Fence is the fence of d (nil: none), for writes to the descriptors of
// the files in it.
func (d *Dir) Fence() *Fence { return d.fence }
