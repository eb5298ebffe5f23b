package main

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// goFuse serves the same file through go-fuse's node API with the mount
// options cryptfs uses that matter here (direct mount, no splice), minus
// default_permissions, which would add a GETATTR of the root per stat with
// attribute timeout 0.
type goFuse struct {
	srv           *fuse.Server
	getattr, read atomic.Int64
}

type goFuseRoot struct {
	fs.Inode
	g    *goFuse
	data []byte
}

type goFuseFile struct {
	fs.Inode
	g    *goFuse
	data []byte
}

var (
	_ fs.NodeOnAdder   = (*goFuseRoot)(nil)
	_ fs.NodeGetattrer = (*goFuseFile)(nil)
	_ fs.NodeOpener    = (*goFuseFile)(nil)
	_ fs.NodeReader    = (*goFuseFile)(nil)
)

func (r *goFuseRoot) OnAdd(ctx context.Context) {
	f := r.NewPersistentInode(ctx, &goFuseFile{g: r.g, data: r.data}, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild("data", f, false)
}

func (f *goFuseFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.g.getattr.Add(1)
	out.Mode = syscall.S_IFREG | 0o644
	out.Size = uint64(len(f.data))
	out.Nlink = 1
	return 0
}

func (f *goFuseFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *goFuseFile) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.g.read.Add(1)
	end := min(off+int64(len(dest)), int64(len(f.data)))
	off = min(off, end)
	return fuse.ReadResultData(f.data[off:end]), 0
}

func mountGoFuse(dir string, data []byte) (mounted, error) {
	g := &goFuse{}
	zero, hour := time.Duration(0), time.Hour
	srv, err := fs.Mount(dir, &goFuseRoot{g: g, data: data}, &fs.Options{
		AttrTimeout:  &zero,
		EntryTimeout: &hour,
		MountOptions: fuse.MountOptions{
			Name:          "gofusebench",
			DirectMount:   true,
			DisableSplice: true,
			MaxWrite:      128 << 10,
			MaxBackground: 64,
		},
	})
	if err != nil {
		return nil, err
	}
	g.srv = srv
	return g, nil
}

func (g *goFuse) unmount() error { return g.srv.Unmount() }

func (g *goFuse) requests() (int64, int64) { return g.getattr.Load(), g.read.Load() }
