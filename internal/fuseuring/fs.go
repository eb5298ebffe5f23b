package fuseuring

import (
	"sort"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const rootID = 1

// tree is a read-only, in-memory directory of regular files: the root
// (node 1) and one node per file, numbered from 2 in name order.
type tree struct {
	names map[string]uint64
	data  [][]byte // by node id - 2
	entry uint64   // entry timeout, seconds
	attr  uint64   // attribute timeout, seconds
}

func newTree(files map[string][]byte, entryTimeout, attrTimeout time.Duration) *tree {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	t := &tree{
		names: make(map[string]uint64, len(names)),
		entry: uint64(entryTimeout / time.Second),
		attr:  uint64(attrTimeout / time.Second),
	}
	for i, n := range names {
		t.names[n] = uint64(i + 2)
		t.data = append(t.data, files[n])
	}
	return t
}

func (t *tree) file(node uint64) ([]byte, bool) {
	if node < 2 || node-2 >= uint64(len(t.data)) {
		return nil, false
	}
	return t.data[node-2], true
}

func (t *tree) attrOf(node uint64) (attr, bool) {
	if node == rootID {
		return attr{Ino: rootID, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Blksize: 4096}, true
	}
	d, ok := t.file(node)
	if !ok {
		return attr{}, false
	}
	size := uint64(len(d))
	return attr{Ino: node, Size: size, Blocks: (size + 511) / 512,
		Mode: syscall.S_IFREG | 0o644, Nlink: 1, Blksize: 4096}, true
}

// Counts are the requests a server answered, by kind and by transport.
type Counts struct {
	Getattr, Lookup, Read, Open, Release, Statfs, Forget, Other uint64
	// Ring is how many of them arrived through io_uring, the rest came
	// through read(2) on /dev/fuse.
	Ring uint64
}

type counters struct {
	getattr, lookup, read, open, release, statfs, forget, other, ring atomic.Uint64
}

func (c *counters) snapshot() Counts {
	return Counts{
		Getattr: c.getattr.Load(), Lookup: c.lookup.Load(), Read: c.read.Load(),
		Open: c.open.Load(), Release: c.release.Load(), Statfs: c.statfs.Load(),
		Forget: c.forget.Load(), Other: c.other.Load(), Ring: c.ring.Load(),
	}
}

// request is one FUSE request, whichever transport brought it: arg is the
// opcode's fixed struct, data what follows it (a name).
type request struct {
	h    *inHeader
	arg  []byte
	data []byte
}

// reply is an answer: payload (which may alias file data) or an errno.
// none means the opcode takes no answer (FORGET, INTERRUPT).
type reply struct {
	payload []byte
	errno   syscall.Errno
	none    bool
}

// handler answers the requests every transport passes on. INIT is the
// transport's, since it decides which transport serves the rest.
type handler struct {
	t     *tree
	count counters
}

// serve answers r; out is scratch space for small replies, at least
// maxReplyHeader bytes, owned by the caller until the reply is sent.
func (s *handler) serve(r request, out []byte) reply {
	switch r.h.Opcode {
	case opGetattr:
		s.count.getattr.Add(1)
		return s.getattr(r.h.Nodeid, out)
	case opLookup:
		s.count.lookup.Add(1)
		return s.lookup(r, out)
	case opOpen:
		s.count.open.Add(1)
		return s.open(r.h.Nodeid, out)
	case opRead:
		s.count.read.Add(1)
		return s.read(r)
	case opRelease:
		s.count.release.Add(1)
		return reply{}
	case opStatfs:
		s.count.statfs.Add(1)
		return s.statfs(out)
	case opForget, opBatchForget:
		// Nothing to drop: nodes live as long as the tree.
		s.count.forget.Add(1)
		return reply{none: true}
	case opInterrupt:
		// Every request is answered at once; nothing to interrupt.
		return reply{none: true}
	case opDestroy:
		return reply{}
	default:
		// FLUSH, GETXATTR, ACCESS...: ENOSYS makes the kernel stop asking.
		s.count.other.Add(1)
		return reply{errno: syscall.ENOSYS}
	}
}

// maxReplyHeader is the largest fixed reply struct (entryOut).
const maxReplyHeader = int(unsafe.Sizeof(entryOut{}))

func (s *handler) getattr(node uint64, out []byte) reply {
	a, ok := s.t.attrOf(node)
	if !ok {
		return reply{errno: syscall.ENOENT}
	}
	o := view[attrOut](out)
	*o = attrOut{AttrValid: s.t.attr, Attr: a}
	return reply{payload: out[:unsafe.Sizeof(*o)]}
}

func (s *handler) lookup(r request, out []byte) reply {
	if r.h.Nodeid != rootID {
		return reply{errno: syscall.ENOTDIR}
	}
	name := r.data
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	node, ok := s.t.names[string(name)]
	if !ok {
		return reply{errno: syscall.ENOENT}
	}
	a, _ := s.t.attrOf(node)
	o := view[entryOut](out)
	*o = entryOut{Nodeid: node, EntryValid: s.t.entry, AttrValid: s.t.attr, Attr: a}
	return reply{payload: out[:unsafe.Sizeof(*o)]}
}

func (s *handler) open(node uint64, out []byte) reply {
	if _, ok := s.t.file(node); !ok {
		return reply{errno: syscall.EISDIR}
	}
	o := view[openOut](out)
	*o = openOut{OpenFlags: fopenDirectIO}
	return reply{payload: out[:unsafe.Sizeof(*o)]}
}

func (s *handler) read(r request) reply {
	d, ok := s.t.file(r.h.Nodeid)
	if !ok || len(r.arg) < int(unsafe.Sizeof(readIn{})) {
		return reply{errno: syscall.EINVAL}
	}
	in := view[readIn](r.arg)
	if in.Offset >= uint64(len(d)) {
		return reply{payload: d[:0]}
	}
	end := min(in.Offset+uint64(in.Size), uint64(len(d)))
	return reply{payload: d[in.Offset:end]}
}

func (s *handler) statfs(out []byte) reply {
	o := view[statfsOut](out)
	*o = statfsOut{Blocks: 1 << 20, Bfree: 1 << 19, Bavail: 1 << 19, Files: 1 << 10,
		Ffree: 1 << 9, Bsize: 4096, Frsize: 4096, Namelen: 255}
	return reply{payload: out[:unsafe.Sizeof(*o)]}
}
