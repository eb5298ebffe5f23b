package cryptfs

import (
	"bytes"
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// Extended attributes in the user and trusted namespaces are stored as
// user.sv.<encrypted name> with a sealed value (bound to the name) on the
// backing entry; attributes the backing entry has for other reasons are
// not shown.
//
// security.* and system.* are not supported (EOPNOTSUPP): labels,
// capabilities and POSIX ACLs would need the kernel to act on them, and a
// nosuid FUSE mount does not. Saying so, rather than "no such attribute",
// matters for speed: the kernel asks for security.capability before every
// write, and ls -l asks for security.selinux and the ACL of every entry
// unless it learns that the file system does not support them.

var (
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeSetxattrer)((*node)(nil))
	_ = (fs.NodeRemovexattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
)

// xattrPath is the absolute backing path: the xattr calls have no *at form.
func (n *node) xattrPath() (string, syscall.Errno) {
	rel, errno := n.relPath()
	if errno != 0 {
		return "", errno
	}
	if rel == "." {
		return n.fsys.dir, 0
	}
	return n.fsys.dir + "/" + rel, 0
}

func unsupportedXattr(attr string) bool {
	return strings.HasPrefix(attr, "security.") || strings.HasPrefix(attr, "system.")
}

func (n *node) xattrName(attr string) (string, syscall.Errno) {
	if unsupportedXattr(attr) {
		return "", syscall.EOPNOTSUPP
	}
	b, err := n.fsys.keys.EncryptXattrName(attr)
	if err != nil {
		return "", syscall.ERANGE
	}
	return b, 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	name, errno := n.xattrName(attr)
	if errno != 0 {
		return 0, errno
	}
	p, errno := n.xattrPath()
	if errno != 0 {
		return 0, errno
	}
	if len(dest) == 0 {
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return 0, toErrno(err)
		}
		return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), 0
	}
	sealed := make([]byte, len(dest)+crypto.NonceSize+crypto.TagSize)
	sz, err := unix.Lgetxattr(p, name, sealed)
	if err == unix.ERANGE {
		if sz, err = unix.Lgetxattr(p, name, nil); err == nil {
			return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, toErrno(err)
	}
	value, err := n.fsys.keys.OpenXattrValue(attr, sealed[:sz])
	if err != nil {
		rel, _ := n.relPath()
		n.fsys.authFailed("xattr value", rel, err, map[string]any{"xattr": name})
		return 0, syscall.EIO
	}
	if len(value) > len(dest) {
		return uint32(len(value)), syscall.ERANGE
	}
	return uint32(copy(dest, value)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	name, errno := n.xattrName(attr)
	if errno != 0 {
		return errno
	}
	p, errno := n.xattrPath()
	if errno != 0 {
		return errno
	}
	return toErrno(unix.Lsetxattr(p, name, n.fsys.keys.SealXattrValue(attr, data), int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	name, errno := n.xattrName(attr)
	if errno != 0 {
		return errno
	}
	p, errno := n.xattrPath()
	if errno != 0 {
		return errno
	}
	return toErrno(unix.Lremovexattr(p, name))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, errno := n.xattrPath()
	if errno != 0 {
		return 0, errno
	}
	var raw []byte
	for {
		sz, err := unix.Llistxattr(p, nil)
		if err != nil {
			return 0, toErrno(err)
		}
		if sz == 0 {
			return 0, 0
		}
		raw = make([]byte, sz)
		sz, err = unix.Llistxattr(p, raw)
		if err == unix.ERANGE {
			continue // grew in between
		}
		if err != nil {
			return 0, toErrno(err)
		}
		raw = raw[:sz]
		break
	}
	var out []byte
	for _, b := range bytes.Split(raw, []byte{0}) {
		if len(b) == 0 {
			continue
		}
		if name, ok := n.fsys.keys.DecryptXattrName(string(b)); ok && !unsupportedXattr(name) {
			out = append(append(out, name...), 0)
		}
	}
	if len(out) > len(dest) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}
