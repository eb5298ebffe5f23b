package cryptfs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Without FUSE_HANDLE_KILLPRIV_V2 the kernel asks GETXATTR
// security.capability before every write(2), to learn whether the write
// must drop file capabilities: a round trip per write, a fifth of the
// requests of an untar. With it, the kernel marks our inodes S_NOSEC and
// leaves the clearing of set-user-ID and set-group-ID bits to us, flagging
// the requests that need it: a WRITE, a truncating SETATTR or an O_TRUNC
// OPEN by a caller without CAP_FSETID. We store no security.* attributes
// (see xattr.go), so there are no capabilities to drop, only mode bits.
// A chown needs nothing from us: the backing fchown (by root) clears the
// bits itself, as chown(2) on any Linux file system does.

// killPriv clears the set-ID bits where a request says the kernel left it
// to us, then tells the kernel to forget the mode it has cached.
type killPriv struct {
	fuse.RawFileSystem
	srv atomic.Pointer[fuse.Server] // set once the server exists
}

func (k *killPriv) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.dropSetID(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

func (k *killPriv) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.dropSetID(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

func (k *killPriv) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st.Ok() && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 && in.Flags&unix.O_TRUNC != 0 {
		if st := k.dropSetID(cancel, &in.InHeader); !st.Ok() {
			k.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh, Flags: in.Flags})
			return st
		}
	}
	return st
}

func (k *killPriv) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := k.RawFileSystem.SetAttr(cancel, in, out)
	if st.Ok() && in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		if st := k.dropSetID(cancel, &in.InHeader); !st.Ok() {
			return st
		}
		// The reply carries the attributes the kernel caches.
		return k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
	}
	return st
}

// dropSetID clears the set-user-ID bit of a regular file, and its
// set-group-ID bit if group execution is on (otherwise the bit means
// mandatory locking, which a write leaves alone, as ext4 does).
func (k *killPriv) dropSetID(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: *h}, &attr); !st.Ok() {
		return st
	}
	mode := attr.Mode
	clear := uint32(0)
	if mode&unix.S_IFMT == unix.S_IFREG {
		if mode&unix.S_ISUID != 0 {
			clear |= unix.S_ISUID
		}
		if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
			clear |= unix.S_ISGID
		}
	}
	if clear == 0 {
		return fuse.OK
	}
	in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: *h, Valid: fuse.FATTR_MODE, Mode: mode &^ clear & 0o7777}}
	if st := k.RawFileSystem.SetAttr(cancel, in, &attr); !st.Ok() {
		return st
	}
	if srv := k.srv.Load(); srv != nil {
		// Attributes only (a negative offset): no page is touched, so
		// this cannot wait on the write being served.
		srv.InodeNotify(h.NodeId, -1, 0)
	}
	return fuse.OK
}
