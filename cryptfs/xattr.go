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

// xattrTarget is where the xattr calls act, which have no *at form: the
// absolute backing path, or for an open file without a name left a
// duplicate of one of its descriptors.
type xattrTarget struct {
	path string
	fd   int // ≥ 0: use (and close) this instead of path
}

func (x xattrTarget) close() {
	if x.fd >= 0 {
		unix.Close(x.fd)
	}
}

func (x xattrTarget) get(name string, dest []byte) (int, error) {
	if x.fd >= 0 {
		return unix.Fgetxattr(x.fd, name, dest)
	}
	return unix.Lgetxattr(x.path, name, dest)
}

func (x xattrTarget) set(name string, data []byte, flags int) error {
	if x.fd >= 0 {
		return unix.Fsetxattr(x.fd, name, data, flags)
	}
	return unix.Lsetxattr(x.path, name, data, flags)
}

func (x xattrTarget) remove(name string) error {
	if x.fd >= 0 {
		return unix.Fremovexattr(x.fd, name)
	}
	return unix.Lremovexattr(x.path, name)
}

func (x xattrTarget) list(dest []byte) (int, error) {
	if x.fd >= 0 {
		return unix.Flistxattr(x.fd, dest)
	}
	return unix.Llistxattr(x.path, dest)
}

func (n *node) xattrPath() (xattrTarget, syscall.Errno) {
	rel, errno := n.relPath()
	if errno == syscall.ENOENT {
		if fd, _ := n.openDup(); fd >= 0 {
			return xattrTarget{fd: fd}, 0
		}
	}
	if errno != 0 {
		return xattrTarget{}, errno
	}
	if rel == "." {
		return xattrTarget{path: n.fsys.dir, fd: -1}, 0
	}
	return xattrTarget{path: n.fsys.dir + "/" + rel, fd: -1}, 0
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
	defer p.close()
	if len(dest) == 0 {
		sz, err := p.get(name, nil)
		if err != nil {
			return 0, toErrno(err)
		}
		return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), 0
	}
	sealed := make([]byte, len(dest)+crypto.NonceSize+crypto.TagSize)
	sz, err := p.get(name, sealed)
	if err == unix.ERANGE {
		if sz, err = p.get(name, nil); err == nil {
			return uint32(max(sz-crypto.NonceSize-crypto.TagSize, 0)), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, toErrno(err)
	}
	value, err := n.fsys.keys.OpenXattrValue(attr, sealed[:sz], nil)
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
	defer p.close()
	return toErrno(p.set(name, n.fsys.keys.SealXattrValue(attr, data, nil), int(flags)))
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
	defer p.close()
	return toErrno(p.remove(name))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, errno := n.xattrPath()
	if errno != 0 {
		return 0, errno
	}
	defer p.close()
	var raw []byte
	for {
		sz, err := p.list(nil)
		if err != nil {
			return 0, toErrno(err)
		}
		if sz == 0 {
			return 0, 0
		}
		raw = make([]byte, sz)
		sz, err = p.list(raw)
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
