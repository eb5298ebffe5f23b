package cryptfs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
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
		return s.fence.Fsetxattr(s.fd, attr, data, flags)
	}
	return s.dir.Setxattr(s.name, attr, data, flags)
}

func (s self) removexattr(attr string) error {
	if s.fd >= 0 {
		return s.fence.Fremovexattr(s.fd, attr)
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

// xattrEntry is where n's attribute values live (see self) and the entry
// ID they are bound to (docs/FORMAT.md): a directory's IV, a regular
// file's file ID (none while it has no header), nothing for other types,
// which hold no user attributes. For a regular file the read lock on its
// contents is held until release, so the ID cannot change meanwhile
// (rebindXattrs changes it under the write lock).
func (n *node) xattrEntry() (s self, id []byte, release func(), errno syscall.Errno) {
	if s, errno = n.self(nil); errno != 0 {
		return s, nil, nil, errno
	}
	release = s.close
	switch {
	case n.IsDir():
		id, errno = n.dirIV()
	case n.Mode()&syscall.S_IFMT == syscall.S_IFREG:
		n.cmu.RLock()
		release = func() { n.cmu.RUnlock(); s.close() }
		id, errno = n.fileID(s)
	}
	if errno != 0 {
		release()
		return s, nil, nil, errno
	}
	return s, id, release, 0
}

// fileID returns the file ID in the header of regular file s, or nil if it
// has none. Callers hold cmu.
func (n *node) fileID(s self) ([]byte, syscall.Errno) {
	if fc := n.fc.Load(); fc != nil {
		return fc.ID(), 0
	}
	fd := s.fd
	if fd < 0 {
		var err error
		if fd, err = s.dir.OpenFile(s.name, unix.O_RDONLY, 0); err != nil {
			return nil, backing.Errno(err)
		}
		defer unix.Close(fd)
	}
	id, err := backing.ReadFileID(fd)
	if errors.Is(err, crypto.ErrAuth) {
		n.fsys.authFailed("file header", n.logPath(), err, nil)
	}
	return id, backing.Errno(err)
}

// rebindXattrs seals the attribute values of the open file fd again for
// its new file ID (nil: none), after the ID changed from oldID: a first
// write gave it a header, or a truncation to zero took it away. Values
// that do not open under oldID are left as they are (they read as EIO and
// were logged when read). Callers hold cmu for writing. A crash between
// the ID change and this leaves the file's values unreadable (EIO), never
// readable elsewhere; see docs/FORMAT.md.
func (n *node) rebindXattrs(fd int, oldID, newID []byte) {
	sz, err := unix.Flistxattr(fd, nil)
	if err != nil || sz == 0 {
		return
	}
	list := make([]byte, sz)
	if sz, err = unix.Flistxattr(fd, list); err != nil {
		return
	}
	keys := n.fsys.keys
	val := make([]byte, 64<<10)
	for _, b := range bytes.Split(list[:sz], []byte{0}) {
		name := string(b)
		attr, ok := keys.DecryptXattrName(name)
		if !ok {
			continue
		}
		k, err := unix.Fgetxattr(fd, name, val)
		if err != nil {
			continue
		}
		plain, err := keys.OpenXattrValue(attr, val[:k], oldID)
		if err != nil {
			continue
		}
		if err := n.fsys.fence.Fsetxattr(fd, name, keys.SealXattrValue(attr, plain, newID), unix.XATTR_REPLACE); err != nil {
			n.fsys.log.WithField("path", n.logPath()).WithError(err).Error("cannot bind an extended attribute to the file's new ID; it will read as EIO")
		}
	}
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	name, errno := n.xattrName(attr)
	if errno != 0 {
		return 0, errno
	}
	p, id, release, errno := n.xattrEntry()
	if errno != 0 {
		return 0, errno
	}
	defer release()
	if len(dest) == 0 {
		sz, err := p.getxattr(name, nil)
		if err != nil {
			return 0, backing.Errno(err)
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
		return 0, backing.Errno(err)
	}
	value, err := n.fsys.keys.OpenXattrValue(attr, sealed[:sz], id)
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
	p, id, release, errno := n.xattrEntry()
	if errno != 0 {
		return errno
	}
	defer release()
	return backing.Errno(p.setxattr(name, n.fsys.keys.SealXattrValue(attr, data, id), int(flags)))
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
	return backing.Errno(p.removexattr(name))
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
			return 0, backing.Errno(err)
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
			return 0, backing.Errno(err)
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
