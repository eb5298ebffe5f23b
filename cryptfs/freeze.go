package cryptfs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Snapshots of a mounted volume (Options.Freezer).
//
// A snapshot copies the backing folder while the mount goes on serving.
// To make the copy one point in time, Freeze holds every request that can
// change the backing folder (write, create, mkdir, mknod, symlink, link,
// unlink, rmdir, rename, setattr, setxattr, removexattr, fallocate, and an
// open with O_TRUNC) until the copy is done: it waits for those in flight
// to finish, and new ones wait for the thaw before they touch anything.
// Reads, lookups, listings, getattr, fsync and release go on. The copy
// then holds exactly what the requests answered before the freeze left:
// what a crash at that moment would have left, which is what a program
// that survives crashes (a database, a rename-based writer) can restore
// from. Like a crash, a freeze can fall inside one write(2): the kernel
// sends a write that starts inside a page as one request up to the end of
// that page and more for the rest, and the copy may hold the first part
// only. A request that waits and is interrupted (a signal to the writer)
// fails with EINTR, as an interrupted write(2) may.
//
// The kernel keeps its own locks while a request waits: a directory with
// a create, unlink or rename held has its lookups of uncached names wait
// too, for as long as the freeze lasts.
//
// Known gap: the repair of an operation that a crash interrupted
// (recover.go; only after a crash, at a file's first use or a directory's
// first lookup in a mount) is not held. A copy made while one runs may
// hold part of it, as a crash in the middle of the repair would, and the
// next mount of the copy repairs it again; or the copy fails because a
// file's size changed under it.
//
// Cost: a held request pays an atomic add on entry and on exit (as an
// RLock would), others nothing; a mount without a Freezer has no gate.

// Freezer holds the changing requests of one mount while a snapshot is
// taken. Make one with NewFreezer, pass it in Options.Freezer, and call
// Freeze while mounted.
type Freezer struct {
	// active counts the changing requests in flight; a freeze subtracts
	// frozenBias, so a request that sees it negative waits.
	active atomic.Int64
	// thawed is closed when the current freeze ends; nil when none.
	thawed atomic.Pointer[chan struct{}]
	// drained hears from the last request to leave during a freeze.
	drained chan struct{}
	// one admits one freeze at a time.
	one chan struct{}
}

// frozenBias is far more than requests can ever be in flight.
const frozenBias = 1 << 40

// ErrFreezeTimeout means changing requests were still running when a
// Freeze's context ended: nothing was frozen.
var ErrFreezeTimeout = errors.New("the volume's writes did not pause in time")

// NewFreezer returns a Freezer that holds nothing yet.
func NewFreezer() *Freezer {
	return &Freezer{drained: make(chan struct{}, 1), one: make(chan struct{}, 1)}
}

// Freeze holds every changing request of the mount and returns once none
// is running: until thaw is called, nothing changes the backing folder.
// If ctx ends first (a request in flight hangs, another freeze lasts),
// nothing stays held and the error wraps ErrFreezeTimeout. Calls of thaw
// after the first do nothing.
func (f *Freezer) Freeze(ctx context.Context) (thaw func(), err error) {
	select {
	case f.one <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: another snapshot holds them: %w", ErrFreezeTimeout, ctx.Err())
	}
	ch := make(chan struct{})
	f.thawed.Store(&ch)
	f.active.Add(-frozenBias)
	var once sync.Once
	release := func() {
		once.Do(func() {
			f.active.Add(frozenBias)
			close(ch)
			f.thawed.Store(nil)
			<-f.one
		})
	}
	for f.active.Load() != -frozenBias {
		select {
		case <-f.drained:
		case <-ctx.Done():
			release()
			return nil, fmt.Errorf("%w: %w", ErrFreezeTimeout, ctx.Err())
		}
	}
	return release, nil
}

// enter admits a changing request, waiting out a freeze; false if the
// request was interrupted while it waited.
func (f *Freezer) enter(cancel <-chan struct{}) bool {
	for {
		if f.active.Add(1) >= 0 {
			return true
		}
		// Frozen: step back out (perhaps as the last one a freeze waits
		// for), wait for the thaw, try again.
		f.leave()
		p := f.thawed.Load()
		if p == nil {
			continue // thawed meanwhile
		}
		select {
		case <-*p:
		case <-cancel:
			return false
		}
	}
}

// leave ends a request that enter admitted.
func (f *Freezer) leave() {
	if f.active.Add(-1) == -frozenBias {
		select {
		case f.drained <- struct{}{}:
		default: // already told
		}
	}
}

// frozenGate holds the changing requests of a mount while its Freezer
// freezes it. It wraps the raw file system outside treeGuard, so a held
// rename does not hold the tree lock that lookups need.
type frozenGate struct {
	fuse.RawFileSystem
	f *Freezer
}

func (g *frozenGate) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.SetAttr(cancel, in, out)
}

func (g *frozenGate) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Create(cancel, in, name, out)
}

// Open is held only when it truncates.
func (g *frozenGate) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&unix.O_TRUNC == 0 {
		return g.RawFileSystem.Open(cancel, in, out)
	}
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Open(cancel, in, out)
}

// Writev, not Write: go-fuse hands every WRITE to Writev (see observed).
func (g *frozenGate) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if !g.f.enter(cancel) {
		return 0, fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Writev(cancel, in, data)
}

func (g *frozenGate) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Fallocate(cancel, in)
}

func (g *frozenGate) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (g *frozenGate) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Mknod(cancel, in, name, out)
}

func (g *frozenGate) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (g *frozenGate) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Link(cancel, in, name, out)
}

func (g *frozenGate) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Unlink(cancel, h, name)
}

func (g *frozenGate) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Rmdir(cancel, h, name)
}

func (g *frozenGate) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (g *frozenGate) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (g *frozenGate) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if !g.f.enter(cancel) {
		return fuse.EINTR
	}
	defer g.f.leave()
	return g.RawFileSystem.RemoveXAttr(cancel, h, attr)
}
