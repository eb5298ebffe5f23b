package archive

import (
	"archive/tar"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/securevol/securevol/crypto"
)

// The stream's entries, as Write makes them and readers check them
// (docs/FORMAT.md, "The stream"): one tar header per backing entry, in
// PAX format, named by its backing path (the top directory is "./", other
// directories end in "/"), with the mode's permission bits, numeric owner,
// modification time to the nanosecond and nothing else that varies from one
// run to the next.

// PAX records of the stream besides the standard ones.
const (
	paxXattr  = "SCHILY.xattr." // an extended attribute, as GNU tar and star write them
	paxSocket = "SECUREVOL.socket"
)

// paxAllowed are the PAX records a stream may hold: those archive/tar
// writes for long names, large numbers and nanoseconds, and ours.
var paxAllowed = map[string]bool{"path": true, "linkpath": true, "size": true, "uid": true, "gid": true, "mtime": true, paxSocket: true}

// entry is one checked header of the stream.
type entry struct {
	hdr   *tar.Header
	path  []string // components below the top; none for the top itself
	class class
	link  []string // a hard link's target
}

func (e *entry) name() string { return e.path[len(e.path)-1] }

// isRoot: the top directory's own entry.
func (e *entry) isRoot() bool { return len(e.path) == 0 }

func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// checkHeader checks h against everything securevol could have written
// (left: the stream's bytes after the header, an upper bound on its size).
func checkHeader(h *tar.Header, left int64) (*entry, error) {
	if h.Format&(tar.FormatUSTAR|tar.FormatPAX) == 0 || h.Format&tar.FormatGNU != 0 {
		return nil, damaged("entry %q: tar format %v", h.Name, h.Format)
	}
	e := &entry{hdr: h}
	var err error
	if e.path, err = splitPath(h.Name, h.Typeflag == tar.TypeDir); err != nil {
		return nil, err
	}
	if !e.isRoot() {
		var ok bool
		if e.class, ok = classify(e.name(), len(e.path) == 1); !ok {
			return nil, damaged("entry %q: not a name securevol makes there", h.Name)
		}
	}
	if err := e.checkType(left); err != nil {
		return nil, err
	}
	if err := e.checkFields(); err != nil {
		return nil, err
	}
	return e, e.checkRecords()
}

// splitPath splits a stream name into components, each a name backing
// accepts. A directory's name ends in "/", the top's is "./".
func splitPath(name string, dir bool) ([]string, error) {
	if name == "./" && dir {
		return nil, nil
	}
	if dir {
		var ok bool
		if name, ok = strings.CutSuffix(name, "/"); !ok {
			return nil, damaged("directory %q: no trailing /", name)
		}
	}
	comps := strings.Split(name, "/")
	if len(comps) > MaxDepth {
		return nil, damaged("entry %.100q...: deeper than %d", name, MaxDepth)
	}
	for _, c := range comps {
		if c == "" || c == "." || c == ".." || len(c) > 255 || strings.IndexByte(c, 0) >= 0 {
			return nil, damaged("entry %q: not a relative path of names", name)
		}
	}
	return comps, nil
}

// checkType checks the type against the name's class, and the size.
func (e *entry) checkType(left int64) error {
	h := e.hdr
	if h.Typeflag != tar.TypeReg && h.Size != 0 {
		return damaged("entry %q: size %d on a non-file", h.Name, h.Size)
	}
	if e.isRoot() {
		return nil // splitPath: a directory
	}
	if e.class != classEntry && h.Typeflag != tar.TypeReg {
		return damaged("entry %q: type %q where securevol keeps a regular file", h.Name, h.Typeflag)
	}
	switch h.Typeflag {
	case tar.TypeReg:
		n, exact := e.class.maxSize()
		if h.Size < 0 || h.Size > left || n >= 0 && (h.Size > n || exact && h.Size != n) {
			return damaged("entry %q: size %d", h.Name, h.Size)
		}
	case tar.TypeDir, tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	case tar.TypeSymlink:
		t := h.Linkname
		if len(t) > crypto.MaxSymlinkLen || !crypto.IsLongTarget(t) && !isBase64URL(t) {
			return damaged("symlink %q: target is not one securevol stores", h.Name)
		}
	case tar.TypeLink:
		link, err := splitPath(h.Linkname, false)
		if err != nil {
			return err
		}
		c, ok := classify(link[len(link)-1], len(link) == 1)
		if !ok || c != classEntry || slices.Compare(link, e.path) >= 0 {
			return damaged("hard link %q: target %q is not an earlier entry", h.Name, h.Linkname)
		}
		e.link = link
	default:
		return damaged("entry %q: type %q", h.Name, h.Typeflag)
	}
	return nil
}

// checkFields checks mode, owner, times and device numbers.
func (e *entry) checkFields() error {
	h := e.hdr
	if h.Mode&^0o7777 != 0 || h.Uid < 0 || h.Uid >= 1<<32-1 || h.Gid < 0 || h.Gid >= 1<<32-1 {
		return damaged("entry %q: mode %o, owner %d:%d", h.Name, h.Mode, h.Uid, h.Gid)
	}
	if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
		return damaged("entry %q: fields securevol does not write", h.Name)
	}
	dev := h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock
	if !dev && (h.Devmajor != 0 || h.Devminor != 0) || h.Devmajor < 0 || h.Devmajor >= 1<<32 || h.Devminor < 0 || h.Devminor >= 1<<32 {
		return damaged("entry %q: device %d,%d", h.Name, h.Devmajor, h.Devminor)
	}
	if h.Typeflag != tar.TypeSymlink && h.Typeflag != tar.TypeLink && h.Linkname != "" {
		return damaged("entry %q: link name on a %q", h.Name, h.Typeflag)
	}
	return nil
}

// checkRecords checks the PAX records: xattrs only where the kernel keeps
// user attributes and only those cryptfs makes, a socket flag only on a
// FIFO.
func (e *entry) checkRecords() error {
	h := e.hdr
	for k, v := range h.PAXRecords {
		attr, isXattr := strings.CutPrefix(k, paxXattr)
		switch {
		case isXattr:
			if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir || !validXattr(attr) || len(v) > maxXattrValue {
				return damaged("entry %q: extended attribute %q", h.Name, attr)
			}
		case k == paxSocket:
			if h.Typeflag != tar.TypeFifo || v != "1" {
				return damaged("entry %q: socket flag", h.Name)
			}
		case !paxAllowed[k]:
			return damaged("entry %q: PAX record %q", h.Name, k)
		}
	}
	return nil
}

// validXattr: an attribute name cryptfs stores (crypto.XattrPrefix and an
// encrypted name).
func validXattr(attr string) bool {
	rest, ok := strings.CutPrefix(attr, crypto.XattrPrefix)
	return ok && len(attr) <= maxXattrName && isBase64URL(rest)
}

// isSocket: a FIFO entry that stands for a socket (tar has no type for
// sockets).
func (e *entry) isSocket() bool { return e.hdr.PAXRecords[paxSocket] == "1" }

// xattrs calls fn for each extended attribute of e, in name order.
func (e *entry) xattrs(fn func(attr, value string) error) error {
	var keys []string
	for k := range e.hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k[len(paxXattr):], e.hdr.PAXRecords[k]); err != nil {
			return err
		}
	}
	return nil
}

// order checks that the stream is in Write's order: each path after the
// last in component order (a depth-first walk with each directory's names
// sorted), so no name comes twice, and each entry's parent directory on
// the stack of directories along the last path; and that a hard link's
// target is an earlier entry that can have links.
type order struct {
	last   []string
	dirs   []string // the directories along the last path, below the top
	first  bool     // the top's entry has been seen
	seed   maphash.Seed
	linkOK map[uint64]bool // hashes of the names of earlier non-directory entries
}

// next checks e and returns how many directories the walk leaves before
// it: the caller closes them, deepest first.
func (o *order) next(e *entry) (leave int, err error) {
	if !o.first {
		if !e.isRoot() {
			return 0, damaged("the stream does not begin with the top directory")
		}
		o.first, o.seed, o.linkOK = true, maphash.MakeSeed(), map[uint64]bool{}
		return 0, nil
	}
	if e.isRoot() || slices.Compare(e.path, o.last) <= 0 {
		return 0, damaged("entry %q: out of order", e.hdr.Name)
	}
	parent := e.path[:len(e.path)-1]
	if len(parent) > len(o.dirs) || !slices.Equal(parent, o.dirs[:len(parent)]) {
		return 0, damaged("entry %q: its directory is not in the stream", e.hdr.Name)
	}
	leave = len(o.dirs) - len(parent)
	o.dirs = o.dirs[:len(parent)]
	if e.link != nil && !o.linkOK[maphash.String(o.seed, e.hdr.Linkname)] {
		return 0, damaged("hard link %q: target %q is not an earlier entry", e.hdr.Name, e.hdr.Linkname)
	}
	switch {
	case e.hdr.Typeflag == tar.TypeDir:
		o.dirs = append(o.dirs, e.name())
	case e.class == classEntry:
		o.linkOK[maphash.String(o.seed, e.hdr.Name)] = true
	}
	o.last = e.path
	return leave, nil
}
