package cryptfs

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// Crash safety of file contents.
//
// A block is sealed whole, so changing part of it (a write that covers a
// block only partly, a truncation or an extension that ends inside it)
// rewrites the whole block in place. Done naively, an interruption in the
// middle leaves a block that is neither the old nor the new version and
// fails authentication: data that was fsynced long ago becomes
// unreadable. Two interruptions matter:
//
//   - The daemon is killed (kill -9, OOM killer, a crash) between two
//     system calls, e.g. after re-sealing a shorter last block but before
//     truncating the file to it.
//   - The daemon is killed during one pwrite: Linux checks for a fatal
//     signal before copying each page of a buffered write and stops
//     there, so a 4124-byte block, which always spans two pages, can be
//     left half new, half old (seen about once in ten kills of a process
//     looping over such writes). The write stops at a page boundary, so
//     a torn write that was growing the file leaves its size a multiple
//     of 4096.
//
// So a block holding data that must survive (node.synced: what the file
// held when this mount loaded it, or at its last fsync) is never rewritten
// in place, in part, before a copy of its new version is in the file:
// replaceBlocks first appends a redo record past every byte the operation
// touches,
//
//	new block 1 ‖ [new block 2] ‖ trailer
//	trailer = "svREDO\x00\x01" ‖ final size (u64) ‖ block number 1 (u64) ‖
//	          block number 2 (u64) ‖ stored length 1 (u16) ‖ stored length 2 (u16)
//
// (big endian, 36 bytes; length 2 is 0 for a single block), then writes
// the blocks in place, then truncates the file to its final size, which
// drops the record. The record's blocks are ordinary sealed blocks (their
// AD binds file ID and block number), so only blocks this file really had
// at that index can be restored from one; the trailer itself is not
// authenticated and is trusted only as far as the blocks in front of it
// authenticate as the blocks it names. Restoring from a record is a
// rollback of a block to one of its own versions plus a truncation, both of
// which anyone who can write the backing folder can do anyway. Data
// written since the last fsync is rewritten in place directly: that keeps
// the cost of the record (about 5 µs, and 10% on an untar, which appends
// to partial blocks all the time) to files that were fsynced.
//
// When a file is loaded for the first time in a mount (openContent),
// repairTail brings an interrupted file back to a valid one:
//
//  1. A valid record at the end: its blocks are written where they belong
//     and the file is truncated to the record's final size. The
//     operation is completed as far as the blocks that held old data
//     go; whatever else it was writing may be missing.
//  2. A last block that fails authentication but whose start does hold a
//     complete sealed block (a longer version was being written, or the
//     record behind it was torn): the file is cut right after it (longest
//     such prefix first; at most 4095 tries, only on this failure path).
//  3. A last block that is neither, in a file whose size is a multiple of
//     4096: the remains of a torn write past the old end (new blocks or a
//     record); it is cut off and the file checked again.
//
// Honest files skip all of it after reading 36 bytes: only a record, a
// size that is a multiple of 4096 or a last block shorter than 29 bytes
// gets a closer look. Anything else (a block tampered with, a tail cut
// inside a nonce or tag) is left alone and reads EIO, logged, as before.
// Every repair is logged.
//
// Guarantees. Kill -9 of the daemon (the backing file system and the
// kernel survive, so the page cache keeps every completed write): after
// remounting, every byte that was fsynced (or written through an O_SYNC or
// O_DSYNC descriptor), or that the file held when this mount first loaded
// it, and that the interrupted operation did not cover, reads back exactly,
// never EIO. Bytes the interrupted write or truncation covered read back
// old or new, and the size is between the old and the new size; the one
// exception is a block that the write replaces entirely (no version of it
// is kept, as a file system that overwrites in place keeps none), which
// may then read EIO until rewritten. Bytes written since the last fsync
// survive the kill too, unless an operation interrupted inside their block
// tears it: that block then reads EIO, which like unsynced data after a
// power loss is not promised. sync(2) and syncfs(2) never reach the daemon,
// so they do not count as an fsync here.
//
// Power loss: only what was fsynced is promised, as on any file system,
// and the backing file system may write the record, the in-place blocks
// and the new size to disk in any order. So a block rewritten in place
// since the last fsync (by a partial write, an append to a partial last
// block, or a truncation or extension ending inside it) can be torn, and
// then reads EIO as a whole, 4 KiB of plaintext including any of its bytes
// fsynced before; where ext4 would tear at sector granularity and keep the
// old bytes, a sealed block cannot. Blocks not rewritten since the last
// fsync are safe.

const (
	recordMagic   = "svREDO\x00\x01"
	recordTrailer = len(recordMagic) + 3*8 + 2*2

	// tearAlign divides the size of any file grown by a write that was
	// cut short: pages are at least this large.
	tearAlign = 4096

	// maxRepairSteps bounds repairTail: an honest interrupted operation
	// needs at most three steps (a torn record spilling into a further
	// block, then the block before it).
	maxRepairSteps = 4
)

// blockUpdate is a new sealed version c of block b.
type blockUpdate struct {
	b int64
	c []byte
}

func (u blockUpdate) end() int64 { return crypto.BlockOffset(uint64(u.b)) + int64(len(u.c)) }

// rewriteBlock writes a new version of block b, which holds data to keep,
// in a file that now ends at oldEnd and will end at final: through a redo
// record if that data must survive a crash (keeps), else in place.
func (n *node) rewriteBlock(h *fileHandle, up blockUpdate, oldEnd, final int64) syscall.Errno {
	if n.keeps(up.b) {
		return n.replaceBlocks(h, []blockUpdate{up}, oldEnd, final)
	}
	start := crypto.BlockOffset(uint64(up.b))
	if errno := preallocate(n.fsys.fence, h.fd, start, int64(len(up.c))); errno != 0 {
		return errno
	}
	if _, err := n.fsys.fence.PwriteFull(h.fd, up.c, start); err != nil {
		return backing.Errno(err)
	}
	if final < oldEnd {
		if err := n.fsys.fence.Ftruncate(h.fd, final); err != nil {
			return backing.Errno(err)
		}
	}
	return 0
}

// replaceBlocks writes one or two blocks that hold data to keep in place,
// in a file that now ends at oldEnd and will end at final, so that an
// interruption at any instant can be repaired (see above). Callers hold
// cmu for writing. If it fails after the record is written, the node
// reloads (and so repairs) the file on its next use.
func (n *node) replaceBlocks(h *fileHandle, ups []blockUpdate, oldEnd, final int64) syscall.Errno {
	at := oldEnd
	for _, u := range ups {
		at = max(at, u.end())
	}
	iov, trailer := make([][]byte, 0, 3), make([]byte, recordTrailer)
	copy(trailer, recordMagic)
	t := trailer[len(recordMagic):]
	binary.BigEndian.PutUint64(t, uint64(final))
	recLen := int64(recordTrailer)
	for i, u := range ups {
		binary.BigEndian.PutUint64(t[8+8*i:], uint64(u.b))
		binary.BigEndian.PutUint16(t[24+2*i:], uint16(len(u.c)))
		iov = append(iov, u.c)
		recLen += int64(len(u.c))
	}
	iov = append(iov, trailer)
	// The blocks are then written into reserved space: a full disk fails
	// here or at the record, before any byte changes. The record itself is
	// not preallocated: releasing space reserved past the end made the
	// truncation below dearer than the whole record (small partial writes
	// ran at half speed).
	for _, u := range ups {
		if errno := preallocate(n.fsys.fence, h.fd, crypto.BlockOffset(uint64(u.b)), int64(len(u.c))); errno != 0 {
			return errno
		}
	}
	if err := pwritevFull(n.fsys.fence, h.fd, iov, at); err != nil {
		n.fsys.fence.Ftruncate(h.fd, oldEnd)
		return backing.Errno(err)
	}
	for _, u := range ups {
		if _, err := n.fsys.fence.PwriteFull(h.fd, u.c, crypto.BlockOffset(uint64(u.b))); err != nil {
			n.reloadLocked()
			return backing.Errno(err)
		}
	}
	if err := n.fsys.fence.Ftruncate(h.fd, final); err != nil {
		n.reloadLocked()
		return backing.Errno(err)
	}
	return 0
}

// reloadLocked forgets what the node knows of the file's contents, so the
// next operation reads (and repairs) it afresh.
func (n *node) reloadLocked() {
	n.fc.Store(nil)
	n.size.Store(-1)
}

// pwritevFull writes the buffers one after the other at off.
func pwritevFull(fence *backing.Fence, fd int, iov [][]byte, off int64) error {
	for len(iov) > 0 {
		k, err := fence.Pwritev(fd, iov, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return unix.EIO
		}
		off += int64(k)
		for len(iov) > 0 && k >= len(iov[0]) {
			k -= len(iov[0])
			iov = iov[1:]
		}
		if len(iov) > 0 {
			iov[0] = iov[0][k:]
		}
	}
	return nil
}

// openContent reads the header of a non-empty file, repairs what an
// interrupted operation left (repairTail) and returns the file's cipher
// and plaintext size. A file no longer than a header is empty (nil
// cipher): it holds no block, so the ID in it is bound to nothing and the
// next write starts a fresh one. A header followed by less than a block
// is damaged: EIO, so that no write ever adopts its ID either.
func (n *node) openContent(h *fileHandle) (*crypto.FileCipher, int64, syscall.Errno) {
	var st unix.Statx_t
	if err := backing.Fstat(h.fd, &st); err != nil {
		return nil, 0, backing.Errno(err)
	}
	if st.Size <= crypto.FileHeaderSize {
		n.csize.Store(int64(st.Size))
		return nil, 0, 0
	}
	id, err := backing.ReadFileID(h.fd)
	if errors.Is(err, crypto.ErrAuth) {
		n.fsys.authFailed("file header", h.rel, err, nil)
	}
	if err != nil {
		return nil, 0, backing.Errno(err)
	}
	fc, err := n.fsys.keys.FileCipher(id)
	if err != nil {
		return nil, 0, syscall.EIO
	}
	end, errno := n.repairTail(h, fc, int64(st.Size))
	n.repaired(int64(st.Size), end)
	switch {
	case errno != 0:
		return nil, 0, errno
	case end <= crypto.FileHeaderSize:
		// The repair left the header alone (an interrupted first write
		// past the end): the file counts as empty, its xattrs are
		// bound to no ID.
		n.rebindXattrs(h.fd, id, nil)
		return nil, 0, 0
	case end <= crypto.FileHeaderSize+crypto.BlockOverhead:
		return nil, 0, syscall.EIO // logged by repairTail
	}
	return fc, int64(crypto.PlainSize(uint64(end))), 0
}

// lastBlock is the number and offset of the last (possibly partial) block
// of a backing file of size end > FileHeaderSize.
func lastBlock(end int64) (int64, int64) {
	b := (end - crypto.FileHeaderSize - 1) / cbs
	return b, crypto.BlockOffset(uint64(b))
}

// repairTail makes the end of a file valid again after an interrupted
// operation (see the top of this file) and returns its backing size.
func (n *node) repairTail(h *fileHandle, fc *crypto.FileCipher, end int64) (int64, syscall.Errno) {
	buf := n.fsys.getBuf()
	defer n.fsys.putBuf(buf)
	w := &repairFd{n: n, h: h}
	defer w.close()
	log := n.fsys.log.WithField("path", h.rel)
	for step := 0; step < maxRepairSteps && end > crypto.FileHeaderSize; step++ {
		done, newEnd, errno := n.applyRecord(h, w, fc, end, buf)
		if errno != 0 {
			return end, errno
		}
		if done {
			log.WithField("size", newEnd).Warn("completed an interrupted write from its redo record")
			end = newEnd
			continue
		}
		b, start := lastBlock(end)
		if stored := end - start; step == 0 && end%tearAlign != 0 && stored > crypto.BlockOverhead {
			// Not what an interruption leaves (see above; once
			// something was cut, the block before is looked at in
			// full); a damaged block is reported when read.
			return end, 0
		}
		c := buf.cipherSpace(int(end - start))
		if _, err := backing.PreadFull(h.fd, c, start); err != nil {
			return end, backing.Errno(err)
		}
		if len(c) > crypto.BlockOverhead {
			if _, err := fc.OpenBlock(buf.head[:0], c, uint64(b)); err == nil {
				return end, 0
			}
		}
		if l := longestSealedPrefix(fc, c, b, buf.head[:0]); l > 0 {
			if err := w.truncate(start + int64(l)); err != nil {
				return end, syscall.EIO // logged by fd
			}
			log.WithFields(logrus.Fields{"block": b, "size": start + int64(l)}).
				Warn("last block was being rewritten when interrupted; cut the file after its complete version")
			return start + int64(l), 0
		}
		if end%tearAlign != 0 {
			if len(c) <= crypto.BlockOverhead {
				log.WithFields(logrus.Fields{"block": b, "stored": len(c)}).
					Error("last block is cut inside its nonce or tag: tampered with or corrupt")
			}
			return end, 0
		}
		if err := w.truncate(start); err != nil {
			return end, syscall.EIO // logged by fd
		}
		log.WithFields(logrus.Fields{"block": b, "size": start}).
			Warn("dropped the incomplete last block of a write that was interrupted")
		end = start
	}
	return end, 0
}

// longestSealedPrefix is the length of the longest proper prefix of c that
// is a complete sealed block b (never a hole: all-zero bytes prove
// nothing), or 0.
func longestSealedPrefix(fc *crypto.FileCipher, c []byte, b int64, scratch []byte) int {
	for l := min(len(c), cbs) - 1; l > crypto.BlockOverhead; l-- {
		if c[0] == 0 && isZero(c[:l]) {
			continue
		}
		if _, err := fc.OpenBlock(scratch, c[:l], uint64(b)); err == nil {
			return l
		}
	}
	return 0
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// applyRecord finishes the operation a valid redo record at the end of the
// file stands for, and reports whether there was one and the file's new
// size.
func (n *node) applyRecord(h *fileHandle, w *repairFd, fc *crypto.FileCipher, end int64, buf *ioBuf) (bool, int64, syscall.Errno) {
	if end < crypto.FileHeaderSize+int64(recordTrailer)+crypto.BlockOverhead+1 {
		return false, 0, 0
	}
	var tr [recordTrailer]byte
	if _, err := backing.PreadFull(h.fd, tr[:], end-int64(recordTrailer)); err != nil {
		return false, 0, backing.Errno(err)
	}
	if string(tr[:len(recordMagic)]) != recordMagic {
		return false, 0, 0
	}
	t := tr[len(recordMagic):]
	final := int64(binary.BigEndian.Uint64(t))
	var ups []blockUpdate
	at := end - int64(recordTrailer)
	for i := 0; i < 2; i++ {
		b := binary.BigEndian.Uint64(t[8+8*i:])
		l := int64(binary.BigEndian.Uint16(t[24+2*i:]))
		if l == 0 && i == 1 {
			break
		}
		if l <= crypto.BlockOverhead || l > cbs || b > 1<<50 {
			return false, 0, 0
		}
		ups = append(ups, blockUpdate{b: int64(b), c: make([]byte, l)})
		at -= l
	}
	if at < crypto.FileHeaderSize || final < crypto.FileHeaderSize || final > at {
		return false, 0, 0
	}
	off := at
	for _, u := range ups {
		if u.end() > at {
			return false, 0, 0
		}
		if _, err := backing.PreadFull(h.fd, u.c, off); err != nil {
			return false, 0, backing.Errno(err)
		}
		off += int64(len(u.c))
		if _, err := fc.OpenBlock(buf.head[:0], u.c, uint64(u.b)); err != nil || isZero(u.c) {
			return false, 0, 0
		}
	}
	fd, err := w.fd()
	if err != nil {
		return false, 0, syscall.EIO // logged by fd
	}
	for _, u := range ups {
		if _, err := n.fsys.fence.PwriteFull(fd, u.c, crypto.BlockOffset(uint64(u.b))); err != nil {
			return false, 0, backing.Errno(err)
		}
	}
	if err := n.fsys.fence.Ftruncate(fd, final); err != nil {
		return false, 0, backing.Errno(err)
	}
	return true, final, 0
}

// repairFd is a descriptor a repair can write through: the handle's own,
// or, for a handle opened read-only, the same file opened again for
// writing (backing.ReopenFile, which reaches the very inode the handle
// has open, even an unlinked one), opened on first use.
type repairFd struct {
	n     *node
	h     *fileHandle
	own   int
	ready bool
}

// fd returns the descriptor; a failure is logged.
func (w *repairFd) fd() (int, error) {
	if w.ready {
		return w.own, nil
	}
	fd, err := w.open()
	if err != nil {
		w.n.fsys.log.WithField("path", w.h.rel).WithError(err).Error("cannot open the file for writing to repair an interrupted operation")
		return -1, err
	}
	w.own, w.ready = fd, true
	return fd, nil
}

func (w *repairFd) open() (int, error) {
	fl, err := unix.FcntlInt(uintptr(w.h.fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, err
	}
	if fl&unix.O_ACCMODE == unix.O_RDWR {
		return w.h.fd, nil
	}
	return backing.ReopenFile(w.h.fd, unix.O_RDWR)
}

func (w *repairFd) truncate(size int64) error {
	fd, err := w.fd()
	if err != nil {
		return err
	}
	return w.n.fsys.fence.Ftruncate(fd, size)
}

func (w *repairFd) close() {
	if w.ready && w.own != w.h.fd {
		unix.Close(w.own)
	}
}
