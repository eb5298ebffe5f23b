package cryptfs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// File contents (docs/FORMAT.md): an 18-byte header, then blocks of up to
// 4096 plaintext bytes sealed one by one into 4124 bytes. Writes and
// truncation re-seal whole blocks; a block only partly covered by a write
// is read, decrypted, merged and sealed again (read-modify-write). The
// node's write lock serializes all of that per inode; reads share it.
//
// A write first preallocates the ciphertext it will overwrite (fallocate
// with KEEP_SIZE), so a full disk fails the write before any byte of an
// existing block changes instead of leaving a torn block; space for
// blocks appended past the end is released again if the write fails. A
// block that keeps data which must survive a crash is rewritten through a
// redo record, and whatever an interruption leaves is repaired when the
// file is next loaded: see recover.go.

const (
	bs  = crypto.BlockSize
	cbs = crypto.CipherBlockSize

	// Requests at least this large are sealed or opened by several
	// goroutines at once.
	parallelMin = 64 << 10

	// fsyncDatasync is FUSE_FSYNC_FDATASYNC in fsync's flags.
	fsyncDatasync = 1
)

// fileHandle is an open regular file: the backing descriptor (read-write
// whenever the plaintext open may write, as partial blocks must be read)
// and the backing path for log messages.
type fileHandle struct {
	fd  int
	rel string
	// appends: opened O_APPEND, so every write goes at the end of the
	// file as the daemon knows it (see Write).
	appends bool
	// syncMode caches whether fd writes synchronously (O_SYNC or
	// O_DSYNC): 0 not known yet, 1 no, 2 yes.
	syncMode atomic.Int32
}

// writesSync reports whether each write through h reaches the disk before
// it returns, as if followed by an fsync.
func (h *fileHandle) writesSync() bool {
	if m := h.syncMode.Load(); m != 0 {
		return m == 2
	}
	fl, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
	s := err == nil && fl&unix.O_DSYNC != 0 // O_SYNC includes O_DSYNC
	if s {
		h.syncMode.Store(2)
	} else {
		h.syncMode.Store(1)
	}
	return s
}

// markSyncedLocked records that everything the file holds now has reached
// the disk. Callers hold cmu for writing.
func (n *node) markSyncedLocked() {
	n.synced.Store(max(n.synced.Load(), n.size.Load()))
}

// keeps reports whether block b may hold data that must survive a crash
// (see node.synced).
func (n *node) keeps(b int64) bool { return b*bs < n.synced.Load() }

var (
	_ = (fs.NodeReader)((*node)(nil))
	_ = (fs.NodeWriter)((*node)(nil))
	_ = (fs.NodeFsyncer)((*node)(nil))
	_ = (fs.NodeReleaser)((*node)(nil))
	_ = (fs.NodeAllocater)((*node)(nil))
)

// ioBuf is the scratch space of one request, pooled per mount.
type ioBuf struct {
	cipher []byte
	block  [cbs]byte // one ciphertext block being read-modify-written
	head   [bs]byte  // plaintext of the first partial block
	tail   [bs]byte  // plaintext of the last partial block
}

// newIOBuf has room for a maxWrite-byte request that starts and ends
// mid-block.
func newIOBuf(maxWrite int) *ioBuf { return &ioBuf{cipher: make([]byte, (maxWrite/bs+2)*cbs)} }

func (f *fsys) getBuf() *ioBuf  { return f.bufs.Get().(*ioBuf) }
func (f *fsys) putBuf(b *ioBuf) { f.bufs.Put(b) }

// cipherSpace returns n bytes from b, or a fresh slice for an oversized
// request.
func (b *ioBuf) cipherSpace(n int) []byte {
	if n <= len(b.cipher) {
		return b.cipher[:n]
	}
	return make([]byte, n)
}

// parallel runs fn over [0, n) split into one range per CPU when the
// request is large enough to pay for the goroutines.
func parallel(n, bytes int, fn func(lo, hi int)) {
	w := workers()
	if w < 2 || n < 2 || bytes < parallelMin {
		fn(0, n)
		return
	}
	w = min(w, n)
	per := (n + w - 1) / w
	var wg sync.WaitGroup
	for lo := per; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(lo+per, n))
	}
	fn(0, min(per, n))
	wg.Wait()
}

// readCipher returns the file's cipher, loading it on first use
// (openContent, which also repairs what an interrupted operation left);
// nil for an empty file. Callers hold cmu (either mode). While fc is not
// loaded, readers wait here for hmu and writers are locked out by cmu, so
// a repair has the file to itself.
func (n *node) readCipher(h *fileHandle) (*crypto.FileCipher, syscall.Errno) {
	if fc := n.fc.Load(); fc != nil {
		return fc, 0
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if fc := n.fc.Load(); fc != nil {
		return fc, 0
	}
	fc, size, errno := n.openContent(h)
	if errno != 0 {
		return nil, errno
	}
	n.size.Store(size)
	n.synced.Store(size)
	if fc != nil {
		n.fc.Store(fc)
	}
	return fc, 0
}

// loadLocked makes sure size is known and, for a non-empty file, the
// cipher. Callers hold cmu for writing.
func (n *node) loadLocked(h *fileHandle) syscall.Errno {
	if n.size.Load() >= 0 && (n.fc.Load() != nil || n.size.Load() == 0) {
		return 0
	}
	_, errno := n.readCipher(h)
	return errno
}

// ensureHeaderLocked writes the header of an empty file: files get theirs
// with their first byte, so an empty file has no backing bytes at all.
func (n *node) ensureHeaderLocked(h *fileHandle) syscall.Errno {
	hdr, errno := n.newHeaderLocked()
	if errno != 0 || hdr == nil {
		return errno
	}
	if _, err := n.fsys.fence.PwriteFull(h.fd, hdr, 0); err != nil {
		n.dropHeaderLocked(h)
		return backing.Errno(err)
	}
	n.rebindXattrs(h.fd, nil, n.fc.Load().ID())
	return 0
}

// newHeaderLocked starts the cipher of an empty file and returns the header
// the caller must write at offset 0 (nil if the file has one already).
func (n *node) newHeaderLocked() ([]byte, syscall.Errno) {
	if n.fc.Load() != nil {
		return nil, 0
	}
	hdr, id, err := crypto.NewFileHeader()
	if err != nil {
		return nil, syscall.EIO
	}
	fc, err := n.fsys.keys.FileCipher(id)
	if err != nil {
		return nil, syscall.EIO
	}
	n.fc.Store(fc)
	return hdr, 0
}

// dropHeaderLocked undoes newHeaderLocked after the header could not be
// written: the file is empty again.
func (n *node) dropHeaderLocked(h *fileHandle) {
	n.fsys.fence.Ftruncate(h.fd, 0)
	n.fc.Store(nil)
}

// readBlock appends the plaintext of block b to dst. A block that fails
// authentication is logged and yields EIO.
func (n *node) readBlock(h *fileHandle, fc *crypto.FileCipher, buf *ioBuf, b int64, dst []byte) ([]byte, syscall.Errno) {
	k, err := backing.PreadFull(h.fd, buf.block[:], crypto.BlockOffset(uint64(b)))
	if err != nil {
		return nil, backing.Errno(err)
	}
	p, err := fc.OpenBlock(dst, buf.block[:k], uint64(b))
	if err != nil {
		n.fsys.authFailed("block", h.rel, err, logrus.Fields{"block": b})
		return nil, syscall.EIO
	}
	return p, 0
}

// preallocate reserves backing space for [off, off+length) without
// changing the size. File systems without fallocate are written to
// unprotected, like any other program would.
func preallocate(fence *backing.Fence, fd int, off, length int64) syscall.Errno {
	for {
		err := fence.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, length)
		switch err {
		case unix.EINTR:
			continue
		case nil, unix.EOPNOTSUPP, unix.ENOSYS:
			return 0
		}
		return backing.Errno(err)
	}
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if len(dest) == 0 || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	n.cmu.RLock()
	defer n.cmu.RUnlock()
	fc, errno := n.readCipher(h)
	if errno != 0 {
		// No result with an error: go-fuse would send the (empty)
		// result with status OK.
		return nil, errno
	}
	if fc == nil {
		return fuse.ReadResultData(nil), 0
	}
	k, errno := n.readAt(h, fc, dest, off)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// readAt decrypts the plaintext at off into dest and returns its length
// (short at end of file). Whole blocks are opened straight into dest; only
// the blocks at either edge go through scratch space.
func (n *node) readAt(h *fileHandle, fc *crypto.FileCipher, dest []byte, off int64) (int, syscall.Errno) {
	end := off + int64(len(dest))
	first := off / bs
	last := (end - 1) / bs
	buf := n.fsys.getBuf()
	defer n.fsys.putBuf(buf)
	c := buf.cipherSpace(int(last-first+1) * cbs)
	k, err := backing.PreadFull(h.fd, c, crypto.BlockOffset(uint64(first)))
	if err != nil {
		return 0, backing.Errno(err)
	}
	c = c[:k]
	present := (k + cbs - 1) / cbs
	if present == 0 {
		return 0, 0
	}
	var bad atomic.Int64
	bad.Store(-1)
	total := 0
	// edge opens block i into scratch and copies the wanted part.
	edge := func(i int, scratch []byte) bool {
		b := first + int64(i)
		p, err := fc.OpenBlock(scratch[:0], c[i*cbs:min((i+1)*cbs, k)], uint64(b))
		if err != nil {
			bad.CompareAndSwap(-1, b)
			return false
		}
		bStart := b * bs
		lo, hi := max(off, bStart), min(end, bStart+int64(len(p)))
		if hi > lo {
			copy(dest[lo-off:], p[lo-bStart:hi-bStart])
			total = max(total, int(hi-off))
		}
		return true
	}
	if !edge(0, buf.head[:]) {
		return 0, n.blockFailed(h, &bad)
	}
	if present > 1 {
		// Blocks strictly between the edges are whole and wanted whole.
		parallel(present-2, (present-2)*bs, func(lo, hi int) {
			for i := lo + 1; i < hi+1; i++ {
				b := first + int64(i)
				pos := b*bs - off
				if _, err := fc.OpenBlock(dest[pos:pos], c[i*cbs:(i+1)*cbs], uint64(b)); err != nil {
					bad.CompareAndSwap(-1, b)
					return
				}
			}
		})
		if bad.Load() >= 0 || !edge(present-1, buf.tail[:]) {
			return 0, n.blockFailed(h, &bad)
		}
		if present > 2 {
			total = max(total, int((first+int64(present)-1)*bs-off))
		}
	}
	return total, 0
}

func (n *node) blockFailed(h *fileHandle, bad *atomic.Int64) syscall.Errno {
	n.fsys.authFailed("block", h.rel, crypto.ErrAuth, logrus.Fields{"block": bad.Load()})
	return syscall.EIO
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (_ uint32, errno syscall.Errno) {
	h, ok := f.(*fileHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(data) == 0 {
		return 0, 0
	}
	n.cmu.Lock()
	defer n.cmu.Unlock()
	if errno := n.loadLocked(h); errno != 0 {
		return 0, errno
	}
	size := n.size.Load()
	if h.appends {
		// The kernel puts an append at the size it has cached, which
		// is too large for a file whose interrupted operation was only
		// just repaired (loadLocked); the end is what we know.
		off = size
	}
	g, errno := n.reserveTo(h, max(size, off+int64(len(data))))
	if errno != 0 {
		return 0, errno
	}
	defer func() { n.settle(h, g, errno) }()
	var hdr []byte
	if off == 0 {
		// An empty file gets its header in the same pwrite as its first
		// blocks.
		var errno syscall.Errno
		if hdr, errno = n.newHeaderLocked(); errno != 0 {
			return 0, errno
		}
	} else if errno := n.ensureHeaderLocked(h); errno != 0 {
		return 0, errno
	}
	if to := off / bs * bs; to > size {
		// A hole: complete the old last block; the whole blocks up to
		// the one written stay sparse.
		if errno := n.extendLocked(h, to); errno != 0 {
			return 0, errno
		}
	}
	if errno := n.writeLocked(h, data, off, hdr); errno != 0 {
		switch {
		case hdr != nil:
			n.dropHeaderLocked(h)
		case n.size.Load() > size:
			n.truncateLocked(h, size)
		}
		return 0, errno
	}
	if hdr != nil {
		n.rebindXattrs(h.fd, nil, n.fc.Load().ID())
	}
	if h.writesSync() {
		n.markSyncedLocked()
	}
	return uint32(len(data)), 0
}

// writeLocked seals data at off (≤ size) and writes all touched blocks,
// preceded by hdr for a new file (then off is 0). A block at either edge
// that keeps bytes of its old version which must survive a crash (see
// keeps) is replaced first, through a redo record (replaceBlocks); the
// other blocks follow with one pwrite, or for large writes a few that
// overlap with the sealing (sealAndWrite).
func (n *node) writeLocked(h *fileHandle, data []byte, off int64, hdr []byte) syscall.Errno {
	fc := n.fc.Load()
	size := n.size.Load()
	end := off + int64(len(data))
	newSize := max(size, end)
	first := off / bs
	last := (end - 1) / bs
	nb := int(last - first + 1)
	buf := n.fsys.getBuf()
	defer n.fsys.putBuf(buf)

	// blockPlain is the new plaintext of an edge block b, and whether it
	// keeps bytes of the old block.
	blockPlain := func(b int64, scratch []byte) ([]byte, bool, syscall.Errno) {
		bStart := b * bs
		plainLen := min(bs, newSize-bStart)
		lo := max(off, bStart) - bStart
		hi := min(end, bStart+plainLen) - bStart
		if lo == 0 && hi == plainLen {
			return data[bStart-off : bStart-off+plainLen], false, 0
		}
		old := scratch[:0]
		if bStart < size {
			var errno syscall.Errno
			if old, errno = n.readBlock(h, fc, buf, b, old); errno != 0 {
				return nil, false, errno
			}
		}
		p := scratch[:plainLen]
		clear(p[len(old):])
		copy(p[lo:hi], data[bStart+lo-off:])
		return p, bStart < size, 0
	}
	head, keepHead, errno := blockPlain(first, buf.head[:])
	if errno != 0 {
		return errno
	}
	tail, keepTail := head, keepHead
	if last != first {
		if tail, keepTail, errno = blockPlain(last, buf.tail[:]); errno != 0 {
			return errno
		}
	}
	out := buf.cipherSpace(len(hdr) + (nb-1)*cbs + len(tail) + crypto.BlockOverhead)
	copy(out, hdr)
	blocks := out[len(hdr):]
	seal := func(i int) []byte {
		b := first + int64(i)
		var p []byte
		switch b {
		case first:
			p = head
		case last:
			p = tail
		default:
			p = data[b*bs-off : b*bs-off+bs]
		}
		return fc.SealBlock(blocks[i*cbs:i*cbs], p, uint64(b))
	}

	// Blocks [lo, hi) of the request are written in place below.
	lo, hi := 0, nb
	var ups []blockUpdate
	if keepHead && n.keeps(first) {
		ups = append(ups, blockUpdate{first, seal(0)})
		lo = 1
	}
	if keepTail && nb > 1 && n.keeps(last) {
		ups = append(ups, blockUpdate{last, seal(nb - 1)})
		hi = nb - 1
	}
	cur := int64(crypto.CipherSize(uint64(size)))
	if len(ups) > 0 {
		final := cur
		for _, u := range ups {
			final = max(final, u.end())
		}
		if errno := n.replaceBlocks(h, ups, cur, final); errno != 0 {
			return errno
		}
		cur = final
		n.size.Store(max(size, int64(crypto.PlainSize(uint64(final)))))
	}
	if lo < hi {
		from, to := len(hdr)+lo*cbs, len(hdr)+min(hi*cbs, len(blocks))
		lead := 0
		if lo == 0 {
			from, lead = 0, len(hdr)
		}
		start := crypto.BlockOffset(uint64(first)) - int64(len(hdr)) + int64(from)
		if start < cur {
			if errno := preallocate(n.fsys.fence, h.fd, start, int64(to-from)); errno != 0 {
				return errno
			}
		}
		if err := sealAndWrite(n.fsys.fence, h.fd, out[from:to], start, lead, hi-lo, func(i int) { seal(lo + i) }); err != nil {
			if start+int64(to-from) > cur {
				// Give back what the write appended; what it overwrote
				// was preallocated, so it cannot be torn by ENOSPC.
				n.fsys.fence.Ftruncate(h.fd, cur)
			}
			return backing.Errno(err)
		}
	}
	n.size.Store(newSize)
	return 0
}

// writeChunk is how many blocks one goroutine seals before writing them,
// so that writing one chunk overlaps with sealing the next.
const writeChunk = 64

// sealAndWrite seals blocks [0, nb) into out after lead bytes (a new
// file's header) with seal, and writes out at off. Large writes are cut
// into chunks shared among the CPUs, each sealed and then written by the
// same goroutine: the backing file system serializes the writes, the
// sealing of the other chunks goes on meanwhile. Chunks may land out of
// order; readers are locked out until all have.
func sealAndWrite(fence *backing.Fence, fd int, out []byte, off int64, lead, nb int, seal func(i int)) error {
	if nb <= writeChunk || len(out) < parallelMin || workers() < 2 {
		for i := 0; i < nb; i++ {
			seal(i)
		}
		_, err := fence.PwriteFull(fd, out, off)
		return err
	}
	chunks := (nb + writeChunk - 1) / writeChunk
	w := min(workers(), chunks)
	errs := make([]error, w)
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for c := k; c < chunks; c += w {
				lo, hi := c*writeChunk, min((c+1)*writeChunk, nb)
				for i := lo; i < hi; i++ {
					seal(i)
				}
				// Chunk c also carries the lead (a new file's header)
				// if it is the first.
				from, end := lead+lo*cbs, min(lead+hi*cbs, len(out))
				if lo == 0 {
					from = 0
				}
				if _, err := fence.PwriteFull(fd, out[from:end], off+int64(from)); err != nil {
					errs[k] = err
					return
				}
			}
		}(k)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// extendLocked grows the file to newSize. The old last block, if partial,
// is padded with zeros and sealed again (rewriteBlock). The whole blocks after it are holes (all-zero
// ciphertext, which reads as zeros); a partial new last block is sealed
// zeros instead, so that the end of a file is always a complete sealed
// block or a whole hole, which is what repairTail relies on.
func (n *node) extendLocked(h *fileHandle, newSize int64) syscall.Errno {
	size := n.size.Load()
	if errno := n.ensureHeaderLocked(h); errno != 0 {
		return errno
	}
	fc := n.fc.Load()
	buf := n.fsys.getBuf()
	defer n.fsys.putBuf(buf)
	if size%bs != 0 {
		b := size / bs
		old, errno := n.readBlock(h, fc, buf, b, buf.head[:0])
		if errno != 0 {
			return errno
		}
		p := buf.head[:min(bs, newSize-b*bs)]
		clear(p[len(old):])
		up := blockUpdate{b, fc.SealBlock(buf.block[:0], p, uint64(b))}
		if errno := n.rewriteBlock(h, up, int64(crypto.CipherSize(uint64(size))), up.end()); errno != 0 {
			return errno
		}
		size = b*bs + int64(len(p))
		n.size.Store(size)
	}
	if size == newSize {
		return 0
	}
	cur := int64(crypto.CipherSize(uint64(size)))
	if size == 0 {
		cur = crypto.FileHeaderSize
	}
	var err error
	if rest := newSize % bs; rest == 0 {
		err = n.fsys.fence.Ftruncate(h.fd, int64(crypto.CipherSize(uint64(newSize))))
	} else {
		b := newSize / bs
		p := buf.tail[:rest]
		clear(p)
		if _, err = n.fsys.fence.PwriteFull(h.fd, fc.SealBlock(buf.block[:0], p, uint64(b)), crypto.BlockOffset(uint64(b))); err != nil {
			n.fsys.fence.Ftruncate(h.fd, cur)
		}
	}
	if err != nil {
		return backing.Errno(err)
	}
	n.size.Store(newSize)
	return 0
}

// truncateLocked sets the plaintext size. Shrinking to mid-block seals the
// new last block again at its shorter length (rewriteBlock); shrinking to
// zero drops the header too, so the next write starts a fresh file ID.
func (n *node) truncateLocked(h *fileHandle, newSize int64) syscall.Errno {
	size := n.size.Load()
	switch {
	case newSize == size:
		return 0
	case newSize == 0:
		old, _ := n.fileID(self{fd: h.fd}) // a damaged header binds nothing
		if err := n.fsys.fence.Ftruncate(h.fd, 0); err != nil {
			return backing.Errno(err)
		}
		n.fc.Store(nil)
		n.size.Store(0)
		n.synced.Store(0)
		if old != nil {
			n.rebindXattrs(h.fd, old, nil)
		}
		return 0
	case newSize > size:
		return n.extendLocked(h, newSize)
	}
	fc := n.fc.Load()
	if rest := newSize % bs; rest != 0 {
		buf := n.fsys.getBuf()
		defer n.fsys.putBuf(buf)
		b := newSize / bs
		old, errno := n.readBlock(h, fc, buf, b, buf.head[:0])
		if errno != 0 {
			return errno
		}
		up := blockUpdate{b, fc.SealBlock(buf.block[:0], old[:min(rest, int64(len(old)))], uint64(b))}
		if errno := n.rewriteBlock(h, up, int64(crypto.CipherSize(uint64(size))), up.end()); errno != 0 {
			return errno
		}
	} else if err := n.fsys.fence.Ftruncate(h.fd, int64(crypto.CipherSize(uint64(newSize)))); err != nil {
		return backing.Errno(err)
	}
	n.size.Store(newSize)
	n.synced.Store(min(n.synced.Load(), newSize))
	return 0
}

// truncate serves truncate(2), ftruncate(2) and O_TRUNC on the entry s.
// Without a descriptor the backing file is opened for the occasion.
func (n *node) truncate(s self, size uint64) (errno syscall.Errno) {
	if size > uint64(1<<62) {
		return syscall.EFBIG
	}
	n.cmu.Lock()
	defer n.cmu.Unlock()
	h := &fileHandle{fd: s.fd, rel: n.logPath()}
	if s.fd < 0 {
		// Opened under cmu, so that an Unlink counting the file's size
		// (removeEntry) either sees this truncation or prevents it.
		fd, err := s.dir.OpenFile(s.name, unix.O_RDWR, 0)
		if err != nil {
			return backing.Errno(err)
		}
		defer unix.Close(fd)
		h.fd = fd
	}
	// Size 0 needs nothing of the old contents: works on a damaged file
	// too.
	if size != 0 {
		if errno := n.loadLocked(h); errno != 0 {
			return errno
		}
	}
	g, errno := n.reserveTo(h, int64(size))
	if errno != 0 {
		return errno
	}
	defer func() { n.settle(h, g, errno) }()
	return n.truncateLocked(h, int64(size))
}

// Allocate supports the two modes that need no hole punching in
// ciphertext: plain preallocation (which may grow the file) and KEEP_SIZE.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, length uint64, mode uint32) (errno syscall.Errno) {
	h, ok := f.(*fileHandle)
	if !ok {
		return syscall.EBADF
	}
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	if length == 0 || off+length > uint64(1<<62) {
		return syscall.EINVAL
	}
	n.cmu.Lock()
	defer n.cmu.Unlock()
	if errno := n.loadLocked(h); errno != 0 {
		return errno
	}
	size := n.size.Load()
	end := int64(off + length)
	start := crypto.BlockOffset(off / bs)
	if n.fc.Load() == nil {
		start = 0 // the header, too
	}
	cend := crypto.BlockOffset(uint64(end-1)/bs) + cbs
	grow := mode == 0 && end > size
	if grow {
		cend = int64(crypto.CipherSize(uint64(end)))
	}
	if mode != 0 && end > size && n.fsys.quota != nil {
		return syscall.EOPNOTSUPP // would reserve space no size shows (quota.go)
	}
	want := size
	if grow {
		want = end
	}
	g, errno := n.reserveTo(h, want)
	if errno != 0 {
		return errno
	}
	defer func() { n.settle(h, g, errno) }()
	if err := n.fsys.fence.Fallocate(h.fd, unix.FALLOC_FL_KEEP_SIZE, start, cend-start); err != nil {
		return backing.Errno(err)
	}
	if grow {
		return n.extendLocked(h, end)
	}
	return 0
}

func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	switch h := f.(type) {
	case *fileHandle:
		return n.fsynced(n.fsys.fence.Fsync(h.fd, flags&fsyncDatasync != 0))
	case *dirHandle:
		return backing.Errno(h.d.Sync())
	}
	s, errno := n.self(nil)
	if errno != 0 {
		return errno
	}
	defer s.close()
	if s.fd >= 0 {
		return n.fsynced(n.fsys.fence.Fsync(s.fd, false))
	}
	fd, err := s.dir.OpenFile(s.name, unix.O_RDONLY, 0)
	if err != nil {
		return backing.Errno(err)
	}
	defer unix.Close(fd)
	return n.fsynced(n.fsys.fence.Fsync(fd, false))
}

// fsynced records a successful fsync of the file (see node.synced).
func (n *node) fsynced(err error) syscall.Errno {
	if err != nil {
		return backing.Errno(err)
	}
	n.cmu.Lock()
	n.markSyncedLocked()
	n.cmu.Unlock()
	return 0
}

func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*fileHandle); ok {
		n.released(h)
		return backing.Errno(unix.Close(h.fd))
	}
	return 0
}
