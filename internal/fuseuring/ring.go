package fuseuring

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring (include/uapi/linux/io_uring.h) through raw system
// calls: one submitter thread, 128-byte SQEs for IORING_OP_URING_CMD.

const (
	setupCQSize       = 1 << 3
	setupSQE128       = 1 << 10
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	enterGetEvents = 1 << 0

	opURingCmd = 46

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	sqeSize = 128 // with IORING_SETUP_SQE128
	cqeSize = 16
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqringOffsets
	CQOff                                                                  cqringOffsets
}

// sqe is the first 64 bytes of a submission entry; for URING_CMD the
// command's own 80 bytes start at Cmd.
type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	CmdOp       uint32 // union with off
	Pad1        uint32
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32
	Cmd         [80]byte // addr3 and pad2, then the SQE128 extension
}

type cqe struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// ring is one io_uring instance. Only one goroutine, locked to its thread,
// may use it: the kernel runs the FUSE work for its commands as task work
// of the submitting thread.
type ring struct {
	fd             int
	sqMem, cqMem   []byte
	sqes           []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
	pending        uint32 // SQEs filled but not yet submitted
}

func newRing(entries uint32, deferTaskrun bool) (*ring, error) {
	p := uringParams{Flags: setupSQE128 | setupCQSize, CQEntries: 2 * entries}
	if deferTaskrun {
		p.Flags |= setupSingleIssuer | setupDeferTaskrun
	}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	if err := r.mapRings(&p); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *ring) mapRings(p *uringParams) error {
	var err error
	sqLen := int(p.SQOff.Array + p.SQEntries*4)
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap SQ ring: %w", err)
	}
	cqLen := int(p.CQOff.CQEs + p.CQEntries*cqeSize)
	if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap CQ ring: %w", err)
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(p.SQEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail = u32(r.sqMem, p.SQOff.Head), u32(r.sqMem, p.SQOff.Tail)
	r.sqMask = *u32(r.sqMem, p.SQOff.RingMask)
	r.cqHead, r.cqTail = u32(r.cqMem, p.CQOff.Head), u32(r.cqMem, p.CQOff.Tail)
	r.cqMask = *u32(r.cqMem, p.CQOff.RingMask)
	r.cqes = unsafe.Pointer(&r.cqMem[p.CQOff.CQEs])
	// SQE slot i always sits at SQ array index i: we fill slots in ring order.
	array := unsafe.Slice(u32(r.sqMem, p.SQOff.Array), p.SQEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return nil
}

// nextSQE returns a zeroed slot for the next submission, or nil when the
// submission queue is full.
func (r *ring) nextSQE() *sqe {
	tail := *r.sqTail + r.pending
	if tail-atomic.LoadUint32(r.sqHead) > r.sqMask {
		return nil
	}
	b := r.sqes[int(tail&r.sqMask)*sqeSize:][:sqeSize]
	clear(b)
	r.pending++
	return (*sqe)(unsafe.Pointer(&b[0]))
}

// enter submits the pending SQEs and waits until at least wait completions
// are ready.
func (r *ring) enter(wait uint32) error {
	n := r.pending
	if n > 0 {
		atomic.StoreUint32(r.sqTail, *r.sqTail+n)
		r.pending = 0
	}
	flags := uintptr(0)
	if wait > 0 {
		flags = enterGetEvents
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			// The SQEs were consumed before the wait was interrupted.
			n = 0
			continue
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// reap calls f for every ready completion and releases them.
func (r *ring) reap(f func(*cqe)) {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		f((*cqe)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*cqeSize)))
	}
	atomic.StoreUint32(r.cqHead, head)
}

func (r *ring) close() {
	for _, m := range [][]byte{r.sqes, r.cqMem, r.sqMem} {
		if m != nil {
			_ = unix.Munmap(m)
		}
	}
	_ = unix.Close(r.fd)
}
