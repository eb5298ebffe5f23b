package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
)

// walker writes the stream of a backing folder: a depth-first walk, each
// directory's names sorted, through package backing only. Names securevol
// never makes (leftover .tmp- files of an interrupted header write,
// anything planted) are not part of the volume (the mount does not show
// them) and are left out; everything else must be something Restore
// accepts, or the walk stops with ErrUnsupported.
type walker struct {
	tw      *tar.Writer
	header  []byte           // WriteOptions.Header
	links   map[inode]string // first path of each inode with several links
	entries int
	sawHdr  bool
	buf     []byte // file contents
	xbuf    []byte // a list of xattr names, then one value
}

type inode struct {
	major, minor uint32
	ino          uint64
}

// walk writes the stream of root to w and returns how many entries it has.
func walk(root *backing.Dir, w io.Writer, header []byte) (int, error) {
	wk := &walker{tw: tar.NewWriter(w), header: header, links: map[inode]string{},
		buf: make([]byte, 1<<20), xbuf: make([]byte, 2*maxXattrValue)}
	var st unix.Statx_t
	if err := root.Stat(&st); err != nil {
		return 0, fmt.Errorf("stat the folder: %w", err)
	}
	h := baseHeader(&st, "./", tar.TypeDir)
	if err := wk.addXattrs(h, root.Fd(), "./"); err != nil {
		return 0, err
	}
	if err := wk.emit(h); err != nil {
		return 0, err
	}
	if err := wk.dir(root, "", 0); err != nil {
		return 0, err
	}
	if !wk.sawHdr {
		return 0, backing.ErrNoHeader
	}
	return wk.entries, wk.tw.Close()
}

// baseHeader is the header of an entry with stat st: the fields every
// type has, and none that would vary between two walks of an unchanged
// folder (no access or change time, no user or group names).
func baseHeader(st *unix.Statx_t, name string, typ byte) *tar.Header {
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  time.Unix(st.Mtime.Sec, int64(st.Mtime.Nsec)),
		Format:   tar.FormatPAX,
	}
}

// emit writes h after checking it as a reader will.
func (wk *walker) emit(h *tar.Header) error {
	if _, err := checkHeader(h, math.MaxInt64); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, errors.Unwrap(err))
	}
	wk.entries++
	return wk.tw.WriteHeader(h)
}

// dir writes the entries below d (stored at prefix, depth levels down).
func (wk *walker) dir(d *backing.Dir, prefix string, depth int) error {
	var names []string
	err := d.ReadNames(func(name string, _ uint64, _ uint8) bool {
		if name != "." && name != ".." {
			names = append(names, name)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("list /%s: %w", prefix, err)
	}
	slices.Sort(names)
	for _, name := range names {
		c, ok := classify(name, depth == 0)
		if !ok {
			continue
		}
		if err := wk.entry(d, prefix, name, c, depth); err != nil {
			return err
		}
	}
	return nil
}

func (wk *walker) entry(d *backing.Dir, prefix, name string, c class, depth int) error {
	path := prefix + name
	var st unix.Statx_t
	if err := d.Lstat(name, &st); err != nil {
		return fmt.Errorf("stat /%s: %w", path, err)
	}
	typ := uint32(st.Mode) & unix.S_IFMT
	if typ == unix.S_IFDIR {
		return wk.subdir(d, path, name, depth)
	}
	if c == classEntry && st.Nlink > 1 {
		if first, seen := wk.linked(&st, path); seen {
			h := baseHeader(&st, path, tar.TypeLink)
			h.Linkname = first
			return wk.emit(h)
		}
	}
	switch typ {
	case unix.S_IFREG:
		return wk.file(d, path, name, c)
	case unix.S_IFLNK:
		target, err := d.Readlink(name)
		if err != nil {
			return fmt.Errorf("read symlink /%s: %w", path, err)
		}
		h := baseHeader(&st, path, tar.TypeSymlink)
		h.Linkname = target
		return wk.emit(h)
	case unix.S_IFIFO:
		return wk.emit(baseHeader(&st, path, tar.TypeFifo))
	case unix.S_IFSOCK:
		h := baseHeader(&st, path, tar.TypeFifo)
		h.PAXRecords = map[string]string{paxSocket: "1"}
		return wk.emit(h)
	case unix.S_IFCHR, unix.S_IFBLK:
		h := baseHeader(&st, path, tar.TypeChar)
		if typ == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(st.Rdev_major), int64(st.Rdev_minor)
		return wk.emit(h)
	}
	return fmt.Errorf("%w: /%s has file type %o", ErrUnsupported, path, typ)
}

// linked returns the first path of the inode st if it was seen before,
// else records path as its first.
func (wk *walker) linked(st *unix.Statx_t, path string) (string, bool) {
	k := inode{st.Dev_major, st.Dev_minor, st.Ino}
	if first, ok := wk.links[k]; ok {
		return first, true
	}
	wk.links[k] = path
	return "", false
}

func (wk *walker) subdir(d *backing.Dir, path, name string, depth int) error {
	if depth+1 >= MaxDepth {
		return fmt.Errorf("%w: /%s is deeper than %d levels", ErrUnsupported, path, MaxDepth)
	}
	sub, err := d.OpenDir(name)
	if err != nil {
		return fmt.Errorf("open /%s: %w", path, err)
	}
	defer sub.Close()
	var st unix.Statx_t
	if err := sub.Stat(&st); err != nil {
		return fmt.Errorf("stat /%s: %w", path, err)
	}
	h := baseHeader(&st, path+"/", tar.TypeDir)
	if err := wk.addXattrs(h, sub.Fd(), path); err != nil {
		return err
	}
	if err := wk.emit(h); err != nil {
		return err
	}
	return wk.dir(sub, path+"/", depth+1)
}

// file writes the regular file name: its size and attributes as the open
// descriptor has them, then its contents (the replacement header for the
// header).
func (wk *walker) file(d *backing.Dir, path, name string, c class) error {
	fd, err := d.OpenFile(name, unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open /%s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := backing.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat /%s: %w", path, err)
	}
	h := baseHeader(&st, path, tar.TypeReg)
	h.Size = int64(st.Size)
	replace := c == classHeader && wk.header != nil
	if c == classHeader {
		wk.sawHdr = true
	}
	if replace {
		h.Size = int64(len(wk.header))
	}
	if err := wk.addXattrs(h, fd, path); err != nil {
		return err
	}
	if err := wk.emit(h); err != nil {
		return err
	}
	if replace {
		_, err = wk.tw.Write(wk.header)
		return err
	}
	return wk.copy(fd, h.Size, path)
}

// copy writes size bytes of fd to the stream.
func (wk *walker) copy(fd int, size int64, path string) error {
	for off := int64(0); off < size; {
		n, err := backing.PreadFull(fd, wk.buf[:min(int64(len(wk.buf)), size-off)], off)
		if err != nil {
			return fmt.Errorf("read /%s: %w", path, err)
		}
		if n == 0 {
			return fmt.Errorf("read /%s: it shrank while being archived", path)
		}
		if _, err := wk.tw.Write(wk.buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// addXattrs adds the attributes cryptfs stored on the open entry fd to h.
// Others (security.*, attributes of other programs) are not the volume's.
func (wk *walker) addXattrs(h *tar.Header, fd int, path string) error {
	list, val := wk.xbuf[:maxXattrValue], wk.xbuf[maxXattrValue:]
	n, err := unix.Flistxattr(fd, list)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil
		}
		return fmt.Errorf("list attributes of /%s: %w", path, err)
	}
	for _, b := range bytes.Split(list[:n], []byte{0}) {
		attr := string(b)
		if !validXattr(attr) {
			continue
		}
		k, err := unix.Fgetxattr(fd, attr, val)
		if err != nil {
			return fmt.Errorf("read attribute of /%s: %w", path, err)
		}
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[paxXattr+attr] = string(val[:k])
	}
	return nil
}
