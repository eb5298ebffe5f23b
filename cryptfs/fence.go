package cryptfs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
)

// Fencing (Options.Fence): in a cluster, a node that loses its mount lease
// may no longer touch the shared backing folder, because another node may
// own it by now. Two checks stop it:
//
//   - fencedGate answers EIO to every request that reaches the backing
//     folder once the fence has tripped, reads included: the other node's
//     writes would show here as torn files and be reported as tampering.
//     Forget, release, statfs and locks pass: they touch nothing there.
//   - a request already past the gate when the fence trips (a process
//     paused in the middle of one) meets the fence again just before each
//     system call that changes the folder: every change through a
//     backing.Dir, and every write, truncate, fallocate, attribute change
//     and fsync that cryptfs makes on a descriptor (fsys.fenced).
//
// The mount stays fenced until it is unmounted: a new lease makes a new
// mount, whose kernel caches start empty.

// fencedGate refuses the requests of a fenced mount.
type fencedGate struct {
	fuse.RawFileSystem
	f    *backing.Fence
	log  *logrus.Entry
	once sync.Once
}

// ok reports whether a request may go on, logging the first refusal.
func (g *fencedGate) ok() bool {
	if g.f.Check() == nil {
		return true
	}
	g.once.Do(func() {
		g.log.Warn("the volume is fenced: this node lost its cluster lease, so another node may own the volume now; every access fails with EIO until it is unmounted")
	})
	return false
}

func (g *fencedGate) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Lookup(cancel, h, name, out)
}

func (g *fencedGate) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.GetAttr(cancel, in, out)
}

func (g *fencedGate) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Statx(cancel, in, out)
}

func (g *fencedGate) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.SetAttr(cancel, in, out)
}

func (g *fencedGate) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Mknod(cancel, in, name, out)
}

func (g *fencedGate) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (g *fencedGate) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Unlink(cancel, h, name)
}

func (g *fencedGate) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Rmdir(cancel, h, name)
}

func (g *fencedGate) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (g *fencedGate) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Link(cancel, in, name, out)
}

func (g *fencedGate) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (g *fencedGate) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if !g.ok() {
		return nil, fuse.EIO
	}
	return g.RawFileSystem.Readlink(cancel, h)
}

func (g *fencedGate) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Access(cancel, in)
}

func (g *fencedGate) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !g.ok() {
		return 0, fuse.EIO
	}
	return g.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (g *fencedGate) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if !g.ok() {
		return 0, fuse.EIO
	}
	return g.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (g *fencedGate) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (g *fencedGate) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (g *fencedGate) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Create(cancel, in, name, out)
}

func (g *fencedGate) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Tmpfile(cancel, in, out)
}

func (g *fencedGate) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Open(cancel, in, out)
}

func (g *fencedGate) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if !g.ok() {
		return nil, fuse.EIO
	}
	return g.RawFileSystem.Read(cancel, in, buf)
}

func (g *fencedGate) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Lseek(cancel, in, out)
}

func (g *fencedGate) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if !g.ok() {
		return 0, fuse.EIO
	}
	return g.RawFileSystem.Write(cancel, in, data)
}

func (g *fencedGate) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if !g.ok() {
		return 0, fuse.EIO
	}
	return g.RawFileSystem.Writev(cancel, in, data)
}

func (g *fencedGate) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if !g.ok() {
		return 0, fuse.EIO
	}
	return g.RawFileSystem.CopyFileRange(cancel, in)
}

func (g *fencedGate) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Flush(cancel, in)
}

func (g *fencedGate) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Fsync(cancel, in)
}

func (g *fencedGate) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.Fallocate(cancel, in)
}

func (g *fencedGate) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.OpenDir(cancel, in, out)
}

func (g *fencedGate) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.ReadDir(cancel, in, out)
}

func (g *fencedGate) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (g *fencedGate) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if !g.ok() {
		return fuse.EIO
	}
	return g.RawFileSystem.FsyncDir(cancel, in)
}
