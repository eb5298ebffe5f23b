package cryptfs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Read-only mounts (Options.ReadOnly): a view of a volume that another
// mount, maybe on another node, writes at other times. Three layers keep
// every change away from the backing folder:
//
//   - the kernel's: the mount is made "ro", so the VFS answers EROFS
//     before a change becomes a request;
//   - readOnlyGate answers EROFS to every request that would change
//     something, should one arrive all the same;
//   - what is left (the repair of a write that a crash cut short, which a
//     read would otherwise start; recover.go) meets backing.ReadOnlyFence
//     before its system call.

// readOnlyGate refuses the changing requests of a read-only mount. fsync
// has nothing to flush and succeeds.
type readOnlyGate struct {
	fuse.RawFileSystem
}

func (g *readOnlyGate) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

// Open is refused for writing or truncating.
func (g *readOnlyGate) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&unix.O_ACCMODE != unix.O_RDONLY || in.Flags&unix.O_TRUNC != 0 {
		return fuse.Status(unix.EROFS)
	}
	return g.RawFileSystem.Open(cancel, in, out)
}

func (g *readOnlyGate) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return 0, fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return 0, fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return fuse.Status(unix.EROFS)
}

func (g *readOnlyGate) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK
}

func (g *readOnlyGate) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK
}
