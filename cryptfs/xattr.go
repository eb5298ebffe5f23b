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

// The xattr calls act on the node's own entry (see self): through a
// descriptor where there is one, else by name in the parent directory,
// which package backing does without following a symlink there.

func (s self) getxattr(attr string, dest []byte) (int, error) {
	if s.fd >= 0 {
		return unix.Fgetxattr(s.fd, attr, dest)
	}
	return s.dir.Getxattr(s.name, attr, dest)
}

func (s self) setxattr(attr string, data []byte, flags int) error {
	if s.fd >= 0 {
		return unix.Fsetxattr(s.fd, attr, data, flags)
	}
	return s.dir.Setxattr(s.name, attr, data, flags)
}

func (s self) removexattr(attr string) error {
	if s.fd >= 0 {
		return unix.Fremovexattr(s.fd, attr)
	}
	return s.dir.Removexattr(s.name, attr)
}

func (s self) listxattr(dest []byte) (int, error) {
	if s.fd >= 0 {
		return unix.Flistxattr(s.fd, dest)
	}
	return s.dir.Listxattr(s.name, dest)
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
	p, errno := n.self(nil)
	if errno != 0 {
		return 0, errno
	}
	defer p.close()
	if len(dest) == 0 {
		sz, err := p.getxattr(name, nil)
		if err != nil {
			return 0, toErrno(err)
		}
		return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), 0
	}
	sealed := make([]byte, len(dest)+crypto.NonceSize+crypto.TagSize)
	sz, err := p.getxattr(name, sealed)
	if err == unix.ERANGE {
		if sz, err = p.getxattr(name, nil); err == nil {
			return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, toErrno(err)
	}
	value, err := n.fsys.keys.OpenXattrValue(attr, sealed[:sz])
	if err != nil {
		n.fsys.authFailed("xattr value", n.logPath(), err, map[string]any{"xattr": name})
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
	p, errno := n.self(nil)
	if errno != 0 {
		return errno
	}
	defer p.close()
	return toErrno(p.setxattr(name, n.fsys.keys.SealXattrValue(attr, data), int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	name, errno := n.xattrName(attr)
	if errno != 0 {
		return errno
	}
	p, errno := n.self(nil)
	if errno != 0 {
		return errno
	}
	defer p.close()
	return toErrno(p.removexattr(name))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, errno := n.self(nil)
	if errno != 0 {
		return 0, errno
	}
	defer p.close()
	var raw []byte
	for {
		sz, err := p.listxattr(nil)
		if err != nil {
			return 0, toErrno(err)
		}
		if sz == 0 {
			return 0, 0
		}
		raw = make([]byte, sz)
		sz, err = p.listxattr(raw)
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
