package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
)

// Restore writes the archive's folder into dst (an empty backing folder, opened with
// backing.OpenRoot/WithRoot), through backing only: hostile entries (paths leaving dst, links
// followed, types not allowed, sizes that lie) are refused with ErrDamaged. On error dst may hold
// a partial tree: the caller removes it.
//
// Every entry is checked (see checkHeader and order) before anything is made for it, and made
// by one backing call relative to the open directory that the walk descended into one name at
// a time without following links; nothing existing is ever replaced (creations are exclusive).
func Restore(dir string, dst *backing.Dir) (*Summary, error) {
	if err := checkEmpty(dst); err != nil {
		return nil, err
	}
	l, err := openLayout(dir)
	if err != nil {
		return nil, err
	}
	s, err := l.summary() // checks the handover before anything is written
	if err != nil {
		return nil, err
	}
	r := &restorer{root: dst, buf: make([]byte, 1<<20)}
	s.Files, err = l.scan(r.entry)
	if err == nil {
		err = r.finish()
	}
	r.close()
	if err != nil {
		return nil, err
	}
	return s, nil
}

func checkEmpty(d *backing.Dir) error {
	empty := true
	if err := d.ReadNames(func(name string, _ uint64, _ uint8) bool {
		empty = name == "." || name == ".."
		return empty
	}); err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("restore: %w", ErrNotEmpty)
	}
	return nil
}

// restorer makes the stream's entries in dst.
type restorer struct {
	root    *backing.Dir
	rootHdr *tar.Header
	dirs    []openDir // the directories along the current path, below the top
	buf     []byte
}

// openDir is a directory made by the restore whose mode and time are set
// when the walk leaves it (they would change while entries are made in it).
type openDir struct {
	d   *backing.Dir
	hdr *tar.Header
}

func (r *restorer) entry(e *entry, leave int, contents io.Reader) error {
	for range leave {
		if err := r.leave(); err != nil {
			return err
		}
	}
	if e.isRoot() {
		r.rootHdr = e.hdr
		return setupDir(r.root.Fd(), e)
	}
	d := r.root
	if n := len(r.dirs); n > 0 {
		d = r.dirs[n-1].d
	}
	h, name := e.hdr, e.name()
	switch h.Typeflag {
	case tar.TypeDir:
		return r.mkdir(d, e)
	case tar.TypeReg:
		return r.file(d, e, contents)
	case tar.TypeLink:
		return r.link(d, e)
	case tar.TypeSymlink:
		if err := d.Symlink(h.Linkname, name); err != nil {
			return fmt.Errorf("restore %s: %w", h.Name, err)
		}
		return finishNode(d, name, h, false)
	}
	mode := uint32(unix.S_IFIFO)
	switch {
	case e.isSocket():
		mode = unix.S_IFSOCK
	case h.Typeflag == tar.TypeChar:
		mode = unix.S_IFCHR
	case h.Typeflag == tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	if err := d.Mknod(name, mode|0o600, unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))); err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	return finishNode(d, name, h, true)
}

// finishNode sets the owner, mode (not for a symlink, which has none)
// and time of the entry name in d, never through a symlink.
func finishNode(d *backing.Dir, name string, h *tar.Header, chmod bool) error {
	err := d.Chown(name, h.Uid, h.Gid)
	if err == nil && chmod {
		err = d.Chmod(name, uint32(h.Mode))
	}
	if err == nil {
		err = d.Utimes(name, times(h.ModTime))
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	return nil
}

// times keeps the access time (the restore's) and sets the modification
// time, from which cryptfs shows the plaintext's.
func times(mtime time.Time) *[2]unix.Timespec {
	return &[2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())}}
}

// setupDir sets what a directory can have at once: attributes and owner.
func setupDir(fd int, e *entry) error {
	if err := setXattrs(fd, e); err != nil {
		return err
	}
	if err := unix.Fchown(fd, e.hdr.Uid, e.hdr.Gid); err != nil {
		return fmt.Errorf("restore %s: %w", e.hdr.Name, err)
	}
	return nil
}

// finishDir sets a directory's mode and time once its entries are made.
func finishDir(fd int, h *tar.Header) error {
	err := unix.Fchmod(fd, uint32(h.Mode))
	if err == nil {
		err = backing.Futimens(fd, times(h.ModTime))
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	return nil
}

func setXattrs(fd int, e *entry) error {
	return e.xattrs(func(attr, value string) error {
		if err := unix.Fsetxattr(fd, attr, []byte(value), 0); err != nil {
			return fmt.Errorf("restore %s: attribute: %w", e.hdr.Name, err)
		}
		return nil
	})
}

func (r *restorer) mkdir(d *backing.Dir, e *entry) error {
	if err := d.Mkdir(e.name(), 0o700); err != nil {
		return fmt.Errorf("restore %s: %w", e.hdr.Name, err)
	}
	sub, err := d.OpenDir(e.name())
	if err != nil {
		return fmt.Errorf("restore %s: %w", e.hdr.Name, err)
	}
	r.dirs = append(r.dirs, openDir{sub, e.hdr})
	return setupDir(sub.Fd(), e)
}

// leave finishes and closes the deepest open directory.
func (r *restorer) leave() error {
	top := r.dirs[len(r.dirs)-1]
	r.dirs = r.dirs[:len(r.dirs)-1]
	defer top.d.Close()
	return finishDir(top.d.Fd(), top.hdr)
}

// finish leaves every directory, the top last.
func (r *restorer) finish() error {
	for len(r.dirs) > 0 {
		if err := r.leave(); err != nil {
			return err
		}
	}
	return finishDir(r.root.Fd(), r.rootHdr)
}

// close closes what a failed restore left open.
func (r *restorer) close() {
	for _, od := range r.dirs {
		od.d.Close()
	}
	r.dirs = nil
}

func (r *restorer) file(d *backing.Dir, e *entry, contents io.Reader) error {
	h := e.hdr
	fd, err := d.OpenFile(e.name(), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	defer unix.Close(fd)
	if err := r.copy(fd, h.Size, contents); err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	if err := setXattrs(fd, e); err != nil {
		return err
	}
	err = unix.Fchown(fd, h.Uid, h.Gid)
	if err == nil {
		err = unix.Fchmod(fd, uint32(h.Mode)) // after chown, which clears setuid
	}
	if err == nil {
		err = backing.Futimens(fd, times(h.ModTime))
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", h.Name, err)
	}
	return nil
}

// holeBlock is the unit of holes: a restored file has a hole wherever the
// stream has a 4 KiB-aligned block of zeros, as the original did (cryptfs
// leaves holes for sparse files, and reads zeros from one as it does from
// a hole).
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// copy writes size bytes of src to fd, leaving holes for zero blocks.
func (r *restorer) copy(fd int, size int64, src io.Reader) error {
	for off := int64(0); off < size; {
		n, err := io.ReadFull(src, r.buf[:min(int64(len(r.buf)), size-off)])
		if err != nil {
			return err
		}
		if err := writeSparse(fd, r.buf[:n], off); err != nil {
			return err
		}
		off += int64(n)
	}
	return unix.Ftruncate(fd, size)
}

// writeSparse writes b at off (a multiple of holeBlock) except its zero
// blocks.
func writeSparse(fd int, b []byte, off int64) error {
	start := 0 // of the data not yet written
	for i := 0; i < len(b); i += holeBlock {
		blk := b[i:min(i+holeBlock, len(b))]
		if !bytes.Equal(blk, zeroBlock[:len(blk)]) {
			continue
		}
		if i > start {
			if _, err := backing.PwriteFull(fd, b[start:i], off+int64(start)); err != nil {
				return err
			}
		}
		start = i + len(blk)
	}
	if start < len(b) {
		_, err := backing.PwriteFull(fd, b[start:], off+int64(start))
		return err
	}
	return nil
}

// link makes the hard link e to an earlier entry, found from the top one
// name at a time without following links.
func (r *restorer) link(d *backing.Dir, e *entry) error {
	src, err := r.walkTo(e.link[:len(e.link)-1])
	if err != nil {
		return linkErr(e, err)
	}
	if src != r.root {
		defer src.Close()
	}
	return linkErr(e, d.Link(src, e.link[len(e.link)-1], e.name()))
}

// walkTo opens the directory at path (components below the top).
func (r *restorer) walkTo(path []string) (*backing.Dir, error) {
	d := r.root
	for _, name := range path {
		sub, err := d.OpenDir(name)
		if d != r.root {
			d.Close()
		}
		if err != nil {
			return nil, err
		}
		d = sub
	}
	return d, nil
}

// linkErr: a link to a missing entry, to a directory, or through a
// non-directory is damage.
func linkErr(e *entry, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOTDIR), errors.Is(err, backing.ErrNotDir):
		return damaged("hard link %s to %s: %v", e.hdr.Name, e.hdr.Linkname, err)
	}
	return fmt.Errorf("restore %s: %w", e.hdr.Name, err)
}
