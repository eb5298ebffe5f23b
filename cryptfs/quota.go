package cryptfs

import (
	"math"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// Size limits (Options.Quota).
//
// What counts is what the backing folder holds, as backing.Usage measures
// it: every regular file and symlink at its size (a file's ciphertext with
// its header, a 28-byte nonce and tag per 4 KiB block, and holes at their
// full ciphertext size; directory IVs, long names' sidecars and long
// symlink targets' files), every directory at backing.DirUsage, each inode
// once. Sizes, not allocated blocks: they are known without asking the
// backing file system after every write, and they do not move with its
// delayed allocation or preallocation. So a sparse file costs its full
// size (truncate -s 20G on a 10G volume fails with ENOSPC), which keeps
// the promise that a volume's files can be filled in within its limit.
// Extended attributes live in the backing inodes (the backing file system
// bounds them, ext4 to one block per inode) and are not counted; nor are
// inodes as such (empty files, FIFOs, device nodes cost nothing).
//
// The count starts from a full walk of the backing folder at mount: a
// bounded walk would leave the limit unenforceable on a large volume, and
// the walk costs one statx per entry (200,000 files: 0.3 s with the
// metadata cached, 1.4 s from a cold disk). From then on every operation
// that changes the backing folder counts its change, so the walk is never
// repeated:
//
//   - File contents (write, truncate, fallocate): the file's backing size
//     is known from its plaintext size (crypto.CipherSize), so counting a
//     write costs no system call. Growth is reserved before the operation
//     and the limit checked atomically, so writers to different files can
//     never pass it together; a write that does not fit fails whole with
//     ENOSPC before any byte changes. Overwrites within the size cost
//     nothing. The transient redo record of a rewrite (recover.go, at most
//     two blocks) is not counted.
//   - Names: mkdir (DirUsage and the IV file), symlink (stored target, and
//     a long target's file) and a long name's sidecar are reserved like
//     growth; removals and repairs are counted after the fact, never
//     refused, so a volume over its limit can always be emptied.
//   - A regular file's last link going away frees its space only when its
//     last descriptor closes: unlinking an open file gives its bytes back
//     at the last close, as the backing file system does. Unlink and
//     Release decide that under the node's omu, and Open registers its
//     descriptor under it, so exactly one of them counts the file.
//
// Statfs shows the limit as the size of the file system and the room left
// (or the backing file system's free space, if less) as free, so df in a
// container shows the volume's limit and use.
//
// Known gaps, corrected by the walk at the next mount: a header rewritten
// by a key rotation while mounted (a few bytes either way), and leftovers
// of failed system calls (the count then errs high, never low). FALLOC_FL_KEEP_SIZE past the end
// of a file is refused (EOPNOTSUPP) under a limit, since space reserved
// there shows in no size. Writes through a shared writable mmap reach the
// daemon after the fact, so ENOSPC there surfaces at msync or not at all,
// as with any FUSE file system; write(2) gets it directly, as the mount
// uses no writeback cache.

// Quota is a mount's size limit and the count of what its backing folder
// holds. Make one with NewQuota, pass it in Options.Quota, and read Used
// while mounted. A Quota serves one mount at a time: Mount starts its
// count from a walk of the backing folder.
type Quota struct {
	limit int64
	used  atomic.Int64
}

// NewQuota returns a Quota that limits a mount to limit bytes of backing
// folder (a positive number; see the top of quota.go for what counts).
func NewQuota(limit int64) *Quota { return &Quota{limit: limit} }

// Limit is the most the backing folder may hold, in bytes.
func (q *Quota) Limit() int64 { return q.limit }

// Used is what the backing folder holds now, in bytes, counted as the
// limit counts it. It is safe to call at any time, from any goroutine.
func (q *Quota) Used() int64 { return q.used.Load() }

// start sets the count from a full walk of the backing folder.
func (q *Quota) start(root *backing.Dir) error {
	used, _, err := backing.Usage(root, math.MaxInt)
	if err != nil {
		return err
	}
	q.used.Store(used)
	return nil
}

// reserve counts n more bytes if they fit in the limit, else fails with
// ENOSPC; n ≤ 0 always succeeds. Nothing happens without a quota.
func (q *Quota) reserve(n int64) syscall.Errno {
	if q == nil {
		return 0
	}
	for {
		u := q.used.Load()
		if n > 0 && n > q.limit-u {
			return syscall.ENOSPC
		}
		if q.used.CompareAndSwap(u, u+n) {
			return 0
		}
	}
}

// charge counts n more bytes (n < 0: fewer) whatever the limit: for what
// has happened already.
func (q *Quota) charge(n int64) {
	if q != nil && n != 0 {
		q.used.Add(n)
	}
}

// statfs shows the limit as the file system's size and the room left
// under it as free, in the units the backing file system reported.
func (q *Quota) statfs(out *fuse.StatfsOut) {
	if q == nil {
		return
	}
	unit := uint64(out.Frsize)
	if unit == 0 {
		unit = uint64(out.Bsize)
	}
	if unit == 0 {
		return
	}
	room := uint64(max(q.limit-q.used.Load(), 0)) / unit
	out.Blocks = uint64(q.limit) / unit
	out.Bfree = min(out.Bfree, room)
	out.Bavail = min(out.Bavail, room)
}

// sizeOf is what the backing entry name of d counts for; 0 if it does not
// exist, or without a quota (so callers pay no system call then).
func (f *fsys) sizeOf(d *backing.Dir, name string) int64 {
	if f.quota == nil {
		return 0
	}
	var st unix.Statx_t
	if d.Lstat(name, &st) != nil {
		return 0
	}
	return backing.EntryUsage(&st)
}

// changeFile runs fn, which creates, replaces or removes the bookkeeping
// file name of d (a sidecar, a long target's file, an IV), and counts the
// change in its size. Never refused: it is for removals and repairs.
func (f *fsys) changeFile(d *backing.Dir, name string, fn func() error) error {
	if f.quota == nil {
		return fn()
	}
	before := f.sizeOf(d, name)
	err := fn()
	f.quota.charge(f.sizeOf(d, name) - before)
	return err
}

// writeLongName stores the sidecar of the long backing name b in d
// (backing.WriteLongName), within the limit.
func (f *fsys) writeLongName(d *backing.Dir, b, enc string) syscall.Errno {
	side := crypto.LongNameSidecar(b)
	before := f.sizeOf(d, side)
	grow := int64(len(enc)) - before
	if errno := f.quota.reserve(grow); errno != 0 {
		return errno
	}
	if err := backing.WriteLongName(d, b, enc); err != nil {
		f.quota.charge(f.sizeOf(d, side) - before - grow)
		return backing.Errno(err)
	}
	return 0
}

// removeLongName deletes the sidecar of the long backing name b in d.
func (f *fsys) removeLongName(d *backing.Dir, b string) {
	f.changeFile(d, crypto.LongNameSidecar(b), func() error { return backing.RemoveLongName(d, b) })
}

// removeLongTarget deletes the file of a long symlink target.
func (f *fsys) removeLongTarget(ref string) {
	f.changeFile(f.root, ref, func() error { return f.root.Unlink(ref) })
}

// removeEntry runs remove, which unlinks the entry b of d (plaintext name
// in n) or renames another entry over it, and gives back what the entry
// held if nothing holds it any more: a directory, or the last link of a
// file that no descriptor has open (else its last Release does it). The
// child's locks are held throughout: cmu, so that no truncation (which
// opens the file by name under it) changes the size counted; omu, so that
// no Open or Release slips in between (see released).
func (n *node) removeEntry(d *backing.Dir, b, name string, remove func() error) error {
	q := n.fsys.quota
	if q == nil {
		return remove()
	}
	var c *node
	if ch := n.GetChild(name); ch != nil && !ch.IsDir() {
		c = ch.Operations().(*node)
		c.cmu.Lock()
		defer c.cmu.Unlock()
		c.omu.Lock()
		defer c.omu.Unlock()
	}
	var st unix.Statx_t
	known := d.Lstat(b, &st) == nil
	if err := remove(); err != nil {
		return err
	}
	isDir := uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR
	if known && (isDir || st.Nlink == 1 && (c == nil || len(c.open) == 0)) {
		q.charge(-backing.EntryUsage(&st))
	}
	return nil
}

// released forgets the closing handle h and, if it was the file's last
// and the file has no name left (unlinked while open, or an O_TMPFILE
// never linked), gives back the file's size: its space is freed when h's
// descriptor closes, right after. Under omu, like removeEntry's check.
func (n *node) released(h *fileHandle) {
	n.omu.Lock()
	defer n.omu.Unlock()
	n.removeOpenLocked(h)
	if n.fsys.quota == nil || len(n.open) > 0 {
		return
	}
	var st unix.Statx_t
	if backing.Fstat(h.fd, &st) == nil && st.Nlink == 0 {
		n.fsys.quota.charge(-backing.EntryUsage(&st))
	}
}

// growth is a change to a file's contents under way: the backing size
// before it and what was reserved for it.
type growth struct {
	before, reserved int64
}

// reserveTo reserves what the file's ciphertext grows by if its plaintext
// becomes size bytes long; ENOSPC if that does not fit. Callers hold cmu
// for writing, the file loaded if it is to keep any content, and call
// settle once done.
func (n *node) reserveTo(h *fileHandle, size int64) (growth, syscall.Errno) {
	q := n.fsys.quota
	if q == nil {
		return growth{}, 0
	}
	before, errno := n.backingSizeLocked(h)
	if errno != 0 {
		return growth{}, errno
	}
	g := growth{before: before, reserved: max(0, int64(crypto.CipherSize(uint64(size)))-before)}
	return g, q.reserve(g.reserved)
}

// settle counts what the operation that reserved g really changed (errno:
// how it ended) and gives back the rest of the reservation. A successful
// operation leaves the backing size that the plaintext size implies (no
// system call); anything else is looked at.
func (n *node) settle(h *fileHandle, g growth, errno syscall.Errno) {
	q := n.fsys.quota
	if q == nil {
		return
	}
	after := int64(-1)
	if s := n.size.Load(); errno == 0 && s > 0 {
		after = int64(crypto.CipherSize(uint64(s)))
	} else {
		var st unix.Statx_t
		if backing.Fstat(h.fd, &st) == nil {
			after = int64(st.Size)
		}
	}
	if after < 0 {
		n.csize.Store(-1) // keep the reservation: the count errs high
		return
	}
	q.charge(after - g.before - g.reserved)
	n.csize.Store(after)
}

// backingSizeLocked is the size of the file's backing file: as last
// counted, or else read.
func (n *node) backingSizeLocked(h *fileHandle) (int64, syscall.Errno) {
	if c := n.csize.Load(); c >= 0 {
		return c, 0
	}
	var st unix.Statx_t
	if err := backing.Fstat(h.fd, &st); err != nil {
		return 0, backing.Errno(err)
	}
	n.csize.Store(int64(st.Size))
	return int64(st.Size), 0
}

// repaired counts a repair of an interrupted operation (openContent) that
// brought the backing file from size to end.
func (n *node) repaired(size, end int64) {
	n.fsys.quota.charge(end - size)
	n.csize.Store(end)
}
