// Package fsck authenticates every name, block, symlink target and extended
// attribute of an encrypted backing directory, without mounting it.
//
// The backing folder is hostile, so it is walked only through package
// backing: one directory descriptor and one name at a time, nothing
// followed, nothing but regular files opened. A planted symlink, FIFO,
// socket or device node where securevol keeps a file of its own is a
// reported problem, never something to follow or read. Path strings exist
// only for the reports, so PATH_MAX does not limit the walk; depth costs
// one open directory per level (Go raises the open-file limit to its hard
// limit at start-up).
package fsck

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// xattrMax is Linux's limit on both an attribute's value and the list of
// a file's attribute names (XATTR_SIZE_MAX, XATTR_LIST_MAX): one buffer of
// this size always suffices.
const xattrMax = 64 << 10

// Problem is one damaged or tampered item.
type Problem struct {
	Backing string // path below the backing directory, as stored
	Plain   string // plaintext path as far as it could be decrypted
	What    string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s (stored as %s): %s", p.Plain, p.Backing, p.What)
}

// Report counts what was checked. Specials are FIFOs, sockets and device
// nodes with valid names: securevol stores them for mknod, and fsck never
// opens them.
type Report struct {
	Dirs, Files, Symlinks, Specials, Blocks, Problems int
}

type checker struct {
	root   *backing.Dir // for long symlink targets
	keys   *crypto.VolumeKeys
	report func(Problem)
	rep    Report
	buf    []byte // one ciphertext block
	plain  []byte // one plaintext block
	xbuf   []byte // xattr names or one value
}

// Check walks the backing directory root and calls report for every
// problem found. The error is for failures to read at all (the root cannot
// be opened, a directory cannot be listed), not for tampering.
func Check(root string, keys *crypto.VolumeKeys, report func(Problem)) (Report, error) {
	d, err := backing.OpenRoot(root)
	if err != nil {
		return Report{}, err
	}
	defer d.Close()
	c := &checker{root: d, keys: keys, report: report,
		buf:   make([]byte, crypto.CipherBlockSize),
		plain: make([]byte, 0, crypto.BlockSize),
		xbuf:  make([]byte, xattrMax)}
	err = c.dir(d, "", "/")
	return c.rep, err
}

func (c *checker) problem(rel, plain, format string, args ...any) {
	c.rep.Problems++
	c.report(Problem{Backing: "/" + rel, Plain: plain, What: fmt.Sprintf(format, args...)})
}

// dir checks directory d (stored at rel, shown at plain) and everything
// below it. Each level holds one descriptor while its children are walked.
func (c *checker) dir(d *backing.Dir, rel, plain string) error {
	c.rep.Dirs++
	iv, err := backing.ReadDirIV(d)
	if err != nil {
		c.problem(rel, plain, "directory IV: %s", describe(d, crypto.DirIVName, err))
		return nil // names and attributes below cannot be checked
	}
	c.xattrs(d.Fd(), iv, rel, plain)
	var names []string
	present := map[string]bool{}
	err = d.ReadNames(func(name string, _ uint64, _ uint8) bool {
		if name != "." && name != ".." {
			names = append(names, name)
			present[name] = true
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("list /%s: %w", rel, err)
	}
	for _, name := range names {
		if err := c.entry(d, name, rel, plain, iv, present); err != nil {
			return err
		}
	}
	return nil
}

// entry checks the entry name of directory d by its type (as stored, never
// followed; every open below checks the type again).
func (c *checker) entry(d *backing.Dir, name, rel, plain string, iv []byte, present map[string]bool) error {
	brel := path.Join(rel, name)
	var st unix.Statx_t
	if err := d.Lstat(name, &st); err != nil {
		c.problem(brel, plain, "stat: %v", err)
		return nil
	}
	typ := uint32(st.Mode) & unix.S_IFMT
	if crypto.IsInternalName(name) {
		c.internal(name, brel, plain, typ, present)
		return nil
	}
	pname, ok := c.plainName(d, name, brel, plain, iv)
	if !ok {
		return nil
	}
	ppath := path.Join(plain, pname)
	switch typ {
	case unix.S_IFDIR:
		sub, err := d.OpenDir(name)
		if err != nil {
			c.problem(brel, ppath, "open directory: %s", describe(d, name, err))
			return nil
		}
		err = c.dir(sub, brel, ppath)
		sub.Close()
		return err
	case unix.S_IFREG:
		c.file(d, name, brel, ppath)
	case unix.S_IFLNK:
		c.symlink(d, name, brel, ppath)
	default:
		c.rep.Specials++
	}
	return nil
}

// internal checks a bookkeeping name that nothing else reads: a sidecar
// must have its entry, and everything securevol keeps must be a regular
// file. (The directory IV and sidecars that are read report their own
// type.)
func (c *checker) internal(name, rel, plain string, typ uint32, present map[string]bool) {
	if strings.HasSuffix(name, crypto.LongNameSuffix) {
		if !present[strings.TrimSuffix(name, crypto.LongNameSuffix)] {
			c.problem(rel, plain, "long-name sidecar without its entry")
		}
		return
	}
	if name != crypto.DirIVName && typ != unix.S_IFREG {
		c.problem(rel, plain, "unexpected %s in the backing folder", typeName(typ))
	}
}

// plainName decrypts the backing name of an entry, reading its long-name
// sidecar if it has one.
func (c *checker) plainName(d *backing.Dir, name, rel, plain string, iv []byte) (string, bool) {
	encoded := name
	if crypto.IsLongName(name) {
		var err error
		if encoded, err = backing.ReadLongName(d, name); err != nil {
			c.problem(rel, plain, "long-name sidecar: %s", describe(d, crypto.LongNameSidecar(name), err))
			return "", false
		}
	}
	pname, err := c.keys.DecryptName(encoded, iv)
	if err != nil {
		c.problem(rel, plain, "name: %v", err)
		return "", false
	}
	return pname, true
}

func (c *checker) symlink(d *backing.Dir, name, rel, plain string) {
	c.rep.Symlinks++
	stored, blob, err := backing.ReadSymlink(c.root, d, name)
	if err != nil {
		c.problem(rel, plain, "symlink: %s", c.describeSymlink(d, name, stored, err))
		return
	}
	if _, err := c.keys.OpenSymlink(stored, blob); err != nil {
		c.problem(rel, plain, "%v", err)
	}
}

func (c *checker) file(d *backing.Dir, name, rel, plain string) {
	c.rep.Files++
	fd, err := d.OpenFile(name, unix.O_RDONLY, 0)
	if err != nil {
		c.problem(rel, plain, "open: %s", describe(d, name, err))
		return
	}
	defer unix.Close(fd)
	id, err := backing.ReadFileID(fd)
	switch {
	case err != nil:
		c.problem(rel, plain, "file header: %v", err)
		return
	case id == nil:
		// No longer than a header: an empty file (docs/FORMAT.md), and
		// its attributes are bound to no file ID.
		c.xattrs(fd, nil, rel, plain)
		return
	}
	c.xattrs(fd, id, rel, plain)
	fc, err := c.keys.FileCipher(id)
	if err != nil {
		c.problem(rel, plain, "%v", err)
		return
	}
	for block := uint64(0); ; block++ {
		holes := wholeHoleBlocks(fd, block)
		block += holes
		c.rep.Blocks += int(holes)
		n, err := backing.PreadFull(fd, c.buf, crypto.BlockOffset(block))
		if err != nil {
			c.problem(rel, plain, "block %d: %v", block, err)
			return
		}
		if n == 0 {
			return
		}
		c.rep.Blocks++
		if _, err := fc.OpenBlock(c.plain[:0], c.buf[:n], block); err != nil {
			c.problem(rel, plain, "%v", err)
		}
		if n < len(c.buf) {
			return
		}
	}
}

// wholeHoleBlocks is how many blocks from block on lie entirely in a hole
// of the backing file fd: they read as zeros, which is a hole of the
// format too, so they need not be read. A planted sparse file of a
// terabyte costs its planter nothing, and read block by block it would
// keep fsck busy for hours. (Where SEEK_DATA is not supported, the file
// counts as all data.)
func wholeHoleBlocks(fd int, block uint64) uint64 {
	off := crypto.BlockOffset(block)
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		// Nothing but hole up to the end of the file.
		var st unix.Statx_t
		if backing.Fstat(fd, &st) != nil {
			return 0
		}
		data = int64(st.Size)
	} else if err != nil {
		return 0
	}
	if data < off+crypto.CipherBlockSize {
		return 0
	}
	return uint64(data-off) / crypto.CipherBlockSize
}

// xattrs checks the attributes of fd, a directory or regular file that
// backing opened and type-checked (so the f*xattr calls act on exactly
// that entry; this also covers the root, which has no parent to name it
// in). entryID is what the values are bound to: a directory's IV, a
// file's ID.
func (c *checker) xattrs(fd int, entryID []byte, rel, plain string) {
	n, err := unix.Flistxattr(fd, c.xbuf)
	if err != nil {
		if err != unix.ENOTSUP {
			c.problem(rel, plain, "list xattrs: %v", err)
		}
		return
	}
	for _, name := range strings.Split(string(c.xbuf[:n]), "\x00") {
		if !strings.HasPrefix(name, crypto.XattrPrefix) {
			continue
		}
		pname, ok := c.keys.DecryptXattrName(name)
		if !ok {
			c.problem(rel, plain, "xattr %s: name fails authentication", name)
			continue
		}
		m, err := unix.Fgetxattr(fd, name, c.xbuf[:cap(c.xbuf)])
		if err != nil {
			c.problem(rel, plain, "xattr %s: %v", pname, err)
			continue
		}
		if _, err := c.keys.OpenXattrValue(pname, c.xbuf[:m], entryID); err != nil {
			c.problem(rel, plain, "%v", err)
		}
	}
}

// describeSymlink says why the symlink name in d, or the long target file
// in the root that it refers to (stored), could not be read.
func (c *checker) describeSymlink(d *backing.Dir, name, stored string, err error) string {
	if stored == "" {
		return describe(d, name, err)
	}
	return "target file " + stored + ": " + describe(c.root, stored, err)
}

// describe says why name in d could not be used: for a wrong type, which
// type was planted there.
func describe(d *backing.Dir, name string, err error) string {
	if !errors.Is(err, backing.ErrNotRegular) && !errors.Is(err, backing.ErrNotDir) &&
		!errors.Is(err, backing.ErrNotSymlink) {
		return err.Error()
	}
	var st unix.Statx_t
	if d.Lstat(name, &st) != nil {
		return err.Error()
	}
	return fmt.Sprintf("unexpected %s in the backing folder", typeName(uint32(st.Mode)&unix.S_IFMT))
}

func typeName(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of type %#o", typ)
}
