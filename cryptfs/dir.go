package cryptfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// dirHandle is an open directory. The listing is read and decrypted in
// one go (and again on rewind), which gives stable offsets for seekdir.
// Readdirplus looks entries up through the open backing directory with
// the backing name already at hand, so a listing costs one statx per
// entry and no name encryption.
type dirHandle struct {
	n *node
	d *backing.Dir // a descriptor of the handle's own, for its offset

	mu     sync.Mutex
	loaded bool
	ents   []dirEntry
	next   int
	last   int // index of the entry Readdirent returned last, for Lookup
}

type dirEntry struct {
	fuse.DirEntry
	backing string
}

var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileLookuper)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
	_ = (fs.FileFsyncdirer)((*dirHandle)(nil))
)

// load reads and decrypts the backing directory. Entries whose names do
// not decrypt (tampered, or foreign files dropped into the backing
// folder) are left out and reported.
func (d *dirHandle) load() syscall.Errno {
	iv, errno := d.n.dirIV()
	if errno != 0 {
		return errno
	}
	keys := d.n.fsys.keys
	ents := d.ents[:0]
	err := d.d.ReadNames(func(name string, ino uint64, typ uint8) bool {
		e := dirEntry{DirEntry: fuse.DirEntry{Ino: ino, Mode: typeToMode(typ)}, backing: name}
		switch {
		case name == "." || name == "..":
			e.Name = name
		case crypto.IsInternalName(name):
			return true
		default:
			enc := name
			if crypto.IsLongName(name) {
				s, err := backing.ReadLongName(d.d, name)
				if err != nil {
					d.n.fsys.authFailed("long name", d.n.childLogPath(name), err, nil)
					return true
				}
				enc = s
			}
			plain, err := keys.DecryptName(enc, iv)
			if err != nil {
				d.n.fsys.authFailed("name", d.n.childLogPath(name), err, nil)
				return true
			}
			e.Name = plain
			d.n.cacheName(plain, name)
		}
		ents = append(ents, e)
		return true
	})
	if err != nil {
		return backing.Errno(err)
	}
	d.ents = ents
	d.loaded = true
	d.next = 0
	return 0
}

func typeToMode(typ uint8) uint32 {
	switch typ {
	case unix.DT_DIR:
		return syscall.S_IFDIR
	case unix.DT_LNK:
		return syscall.S_IFLNK
	case unix.DT_FIFO:
		return syscall.S_IFIFO
	case unix.DT_SOCK:
		return syscall.S_IFSOCK
	case unix.DT_CHR:
		return syscall.S_IFCHR
	case unix.DT_BLK:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.loaded {
		if errno := d.load(); errno != 0 {
			return nil, errno
		}
	}
	if d.next >= len(d.ents) {
		return nil, 0
	}
	d.last = d.next
	d.next++
	de := d.ents[d.last].DirEntry
	de.Off = uint64(d.next)
	return &de, 0
}

// Lookup serves readdirplus for the entry Readdirent returned last.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d.mu.Lock()
	var b string
	if d.last < len(d.ents) && d.ents[d.last].Name == name {
		b = d.ents[d.last].backing
	}
	d.mu.Unlock()
	if b == "" {
		return d.n.Lookup(ctx, name, out)
	}
	var st unix.Statx_t
	if err := d.d.Lstat(b, &st); err != nil {
		return nil, backing.Errno(err)
	}
	return d.n.newChild(ctx, d.d, b, &st, out), 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 || !d.loaded {
		// rewinddir: show what changed since.
		if errno := d.load(); errno != 0 {
			return errno
		}
	}
	if off > uint64(len(d.ents)) {
		return syscall.EINVAL
	}
	d.next = int(off)
	return 0
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return backing.Errno(d.d.Sync())
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.d.Close()
}
