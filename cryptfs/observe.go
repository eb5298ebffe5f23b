package cryptfs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Observer hears what a mount does, for metrics (Options.Observer). Its
// methods are called concurrently on the request path: they must be
// cheap (an atomic add) and must not block.
type Observer interface {
	// Request: one FUSE request of kind op took d, whatever its outcome.
	Request(op Op, d time.Duration)
	// Read: a READ answered n bytes of plaintext.
	Read(n int)
	// Write: a WRITE stored n bytes of plaintext.
	Write(n int)
	// AuthFailure: stored data (a block, name, file header, symlink
	// target, extended attribute value or directory IV) failed
	// authentication or was damaged: tampering or corruption. It is
	// logged too, with the backing path.
	AuthFailure()
	// Mounted: the mount is up; bringing it up took took.
	Mounted(took time.Duration)
	// Unmounted: the mount's server has ended (unmounted by whoever).
	Unmounted()
}

// Op is a kind of FUSE request that Observer.Request times.
type Op uint8

// The requests timed; the rest (FORGET, RELEASE, ACCESS, ...) are rare or
// answered by go-fuse alone.
const (
	OpLookup Op = iota
	OpGetAttr
	OpSetAttr
	OpCreate
	OpOpen
	OpRead
	OpWrite
	OpFsync
	OpFallocate
	OpOpenDir
	OpReadDir
	OpMkdir
	OpMknod
	OpSymlink
	OpReadlink
	OpLink
	OpUnlink
	OpRmdir
	OpRename
	OpStatFs
	OpGetXAttr
	OpSetXAttr
	OpListXAttr
	OpRemoveXAttr
	// NumOps is the number of Ops, for tables indexed by Op.
	NumOps
)

// String is the op's lower-case FUSE name (READDIRPLUS counts as readdir,
// STATX as getattr).
func (o Op) String() string {
	names := [NumOps]string{"lookup", "getattr", "setattr", "create", "open", "read", "write", "fsync",
		"fallocate", "opendir", "readdir", "mkdir", "mknod", "symlink", "readlink", "link", "unlink",
		"rmdir", "rename", "statfs", "getxattr", "setxattr", "listxattr", "removexattr"}
	if o < NumOps {
		return names[o]
	}
	return "unknown"
}

// observed reports each request to an Observer. It wraps the whole raw
// file system, outside treeGuard, so a request's time includes any wait
// for a rename.
type observed struct {
	fuse.RawFileSystem
	obs Observer
}

// done reports a request of kind op that began at start. Deferred with
// time.Now() as argument, it costs two clock reads and no allocation.
func (o *observed) done(op Op, start time.Time) { o.obs.Request(op, time.Since(start)) }

func (o *observed) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer o.done(OpLookup, time.Now())
	return o.RawFileSystem.Lookup(cancel, h, name, out)
}

func (o *observed) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer o.done(OpGetAttr, time.Now())
	return o.RawFileSystem.GetAttr(cancel, in, out)
}

func (o *observed) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer o.done(OpGetAttr, time.Now())
	return o.RawFileSystem.Statx(cancel, in, out)
}

func (o *observed) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer o.done(OpSetAttr, time.Now())
	return o.RawFileSystem.SetAttr(cancel, in, out)
}

func (o *observed) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer o.done(OpCreate, time.Now())
	return o.RawFileSystem.Create(cancel, in, name, out)
}

func (o *observed) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer o.done(OpOpen, time.Now())
	return o.RawFileSystem.Open(cancel, in, out)
}

func (o *observed) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer o.done(OpRead, time.Now())
	r, st := o.RawFileSystem.Read(cancel, in, buf)
	if st.Ok() && r != nil {
		o.obs.Read(r.Size())
	}
	return r, st
}

// Writev, not Write: go-fuse hands every WRITE to Writev and falls back to
// Write only when Writev answers ENOSYS, which go-fuse's node bridge never
// does.
func (o *observed) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer o.done(OpWrite, time.Now())
	n, st := o.RawFileSystem.Writev(cancel, in, data)
	if st.Ok() {
		o.obs.Write(int(n))
	}
	return n, st
}

func (o *observed) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer o.done(OpFsync, time.Now())
	return o.RawFileSystem.Fsync(cancel, in)
}

func (o *observed) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer o.done(OpFallocate, time.Now())
	return o.RawFileSystem.Fallocate(cancel, in)
}

func (o *observed) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer o.done(OpOpenDir, time.Now())
	return o.RawFileSystem.OpenDir(cancel, in, out)
}

func (o *observed) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer o.done(OpReadDir, time.Now())
	return o.RawFileSystem.ReadDir(cancel, in, out)
}

func (o *observed) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer o.done(OpReadDir, time.Now())
	return o.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (o *observed) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer o.done(OpMkdir, time.Now())
	return o.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (o *observed) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer o.done(OpMknod, time.Now())
	return o.RawFileSystem.Mknod(cancel, in, name, out)
}

func (o *observed) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer o.done(OpSymlink, time.Now())
	return o.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (o *observed) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer o.done(OpReadlink, time.Now())
	return o.RawFileSystem.Readlink(cancel, h)
}

func (o *observed) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer o.done(OpLink, time.Now())
	return o.RawFileSystem.Link(cancel, in, name, out)
}

func (o *observed) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer o.done(OpUnlink, time.Now())
	return o.RawFileSystem.Unlink(cancel, h, name)
}

func (o *observed) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer o.done(OpRmdir, time.Now())
	return o.RawFileSystem.Rmdir(cancel, h, name)
}

func (o *observed) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer o.done(OpRename, time.Now())
	return o.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (o *observed) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer o.done(OpStatFs, time.Now())
	return o.RawFileSystem.StatFs(cancel, h, out)
}

func (o *observed) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer o.done(OpGetXAttr, time.Now())
	return o.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (o *observed) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	defer o.done(OpSetXAttr, time.Now())
	return o.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (o *observed) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer o.done(OpListXAttr, time.Now())
	return o.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (o *observed) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	defer o.done(OpRemoveXAttr, time.Now())
	return o.RawFileSystem.RemoveXAttr(cancel, h, attr)
}
