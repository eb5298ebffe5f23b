package cryptfs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// treeGuard keeps operations that find a node's backing entry through its
// name in go-fuse's tree (node.entry) from running while a rename is half
// done: go-fuse moves the renamed node in its tree only after our Rename
// has renamed the backing entry, and a name read in between is the old
// one, which no longer exists (ENOENT for an open, chmod or stat of
// anything below a directory being renamed, or of the renamed entry).
// Reads and writes go through open descriptors and are not fenced.
type treeGuard struct {
	fuse.RawFileSystem
	mu *sync.RWMutex
}

func (g *treeGuard) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (g *treeGuard) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Lookup(cancel, h, name, out)
}

func (g *treeGuard) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.GetAttr(cancel, in, out)
}

func (g *treeGuard) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Statx(cancel, in, out)
}

func (g *treeGuard) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.SetAttr(cancel, in, out)
}

func (g *treeGuard) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Mknod(cancel, in, name, out)
}

func (g *treeGuard) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (g *treeGuard) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Unlink(cancel, h, name)
}

func (g *treeGuard) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Rmdir(cancel, h, name)
}

func (g *treeGuard) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Link(cancel, in, name, out)
}

func (g *treeGuard) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (g *treeGuard) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Readlink(cancel, h)
}

func (g *treeGuard) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (g *treeGuard) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (g *treeGuard) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (g *treeGuard) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (g *treeGuard) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Create(cancel, in, name, out)
}

func (g *treeGuard) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Open(cancel, in, out)
}

func (g *treeGuard) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.Fsync(cancel, in)
}

func (g *treeGuard) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.OpenDir(cancel, in, out)
}

func (g *treeGuard) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.ReadDir(cancel, in, out)
}

func (g *treeGuard) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.RawFileSystem.ReadDirPlus(cancel, in, out)
}
