package fuseuring

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FUSE over io_uring (Documentation/filesystems/fuse-io-uring.rst): after
// INIT, each queue (the kernel has one per possible CPU and picks it by the
// CPU the requesting task runs on) registers entries of two buffers each, a
// fixed header and a payload; the kernel completes a REGISTER or
// COMMIT_AND_FETCH command when it has put a request into an entry, and the
// next COMMIT_AND_FETCH both answers it and hands the entry back.

const (
	cmdRegister       = 1
	cmdCommitAndFetch = 2

	ringHeaderInOut = 128 // fuse_in_header / fuse_out_header
	ringHeaderOpIn  = 128 // the opcode's fixed argument struct
)

// ringHeader is struct fuse_uring_req_header.
type ringHeader struct {
	InOut     [ringHeaderInOut]byte
	OpIn      [ringHeaderOpIn]byte
	Flags     uint64
	CommitID  uint64
	PayloadSz uint32
	Padding   uint32
	Reserved  uint64
}

// ringCmd is struct fuse_uring_cmd_req, in the SQE's command area.
type ringCmd struct {
	Flags    uint64
	CommitID uint64
	QID      uint16
	Padding  [6]uint8
}

// entry is one registered request slot of a queue: its memory is mmapped
// so the Go runtime neither moves nor frees what the kernel writes to.
type entry struct {
	mem     []byte
	header  *ringHeader
	payload []byte
	iov     *[2]unix.Iovec
}

// queueDepth is how many requests one queue can hold at once. Synchronous
// requests block their caller, so a few per CPU suffice.
const queueDepth = 4

// ringQueue serves one FUSE queue from one locked OS thread.
type ringQueue struct {
	qid     uint16
	devFd   int
	r       *ring
	entries []entry
	h       *handler
}

func newRingQueue(qid uint16, devFd int, h *handler, deferTaskrun bool) (*ringQueue, error) {
	r, err := newRing(2*queueDepth, deferTaskrun)
	if err != nil {
		return nil, err
	}
	q := &ringQueue{qid: qid, devFd: devFd, r: r, h: h}
	hdr := int(unsafe.Sizeof(ringHeader{}))
	iovOff := (hdr + 15) &^ 15
	payloadOff := 4096
	for range queueDepth {
		mem, err := unix.Mmap(-1, 0, payloadOff+maxWrite, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			q.close()
			return nil, fmt.Errorf("mmap ring entry: %w", err)
		}
		e := entry{
			mem:     mem,
			header:  (*ringHeader)(unsafe.Pointer(&mem[0])),
			payload: mem[payloadOff:],
			iov:     (*[2]unix.Iovec)(unsafe.Pointer(&mem[iovOff])),
		}
		e.iov[0] = unix.Iovec{Base: &mem[0], Len: uint64(hdr)}
		e.iov[1] = unix.Iovec{Base: &e.payload[0], Len: uint64(len(e.payload))}
		q.entries = append(q.entries, e)
	}
	return q, nil
}

// register hands every entry to the kernel.
func (q *ringQueue) register() error {
	for i := range q.entries {
		s := q.r.nextSQE()
		q.prepare(s, i, cmdRegister)
		s.Addr = uint64(uintptr(unsafe.Pointer(q.entries[i].iov)))
		s.Len = 2
	}
	return q.r.enter(0)
}

func (q *ringQueue) prepare(s *sqe, i int, op uint32) *ringCmd {
	s.Opcode = opURingCmd
	s.Fd = int32(q.devFd)
	s.CmdOp = op
	s.UserData = uint64(i)
	c := (*ringCmd)(unsafe.Pointer(&s.Cmd[0]))
	c.QID = q.qid
	return c
}

// errQueueStopped is how a queue learns the connection went away.
var errQueueStopped = errors.New("fuse ring queue stopped")

// serveQueue sets up queue qid on the calling goroutine's thread, reports
// on registered once its entries are with the kernel, and serves requests
// until the connection ends. The thread stays locked (and pinned to CPU
// qid when pin is set) for the life of the queue: it is the one that
// creates and submits to the ring, and the kernel runs the queue's work
// as its task work.
func serveQueue(qid uint16, devFd int, h *handler, o Options, registered chan<- error) error {
	// Never unlocked: the thread ends with the goroutine instead of going
	// back to the runtime with its CPU affinity.
	runtime.LockOSThread()
	q, err := startQueue(qid, devFd, h, o)
	registered <- err
	if err != nil {
		return err
	}
	defer q.close()
	return q.run()
}

func startQueue(qid uint16, devFd int, h *handler, o Options) (*ringQueue, error) {
	if o.Pin {
		var set unix.CPUSet
		set.Set(int(qid))
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return nil, fmt.Errorf("pin queue %d: %w", qid, err)
		}
	}
	q, err := newRingQueue(qid, devFd, h, o.DeferTaskrun)
	if err != nil {
		return nil, err
	}
	if err := q.register(); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *ringQueue) run() error {
	live := len(q.entries)
	var failed error
	for live > 0 {
		if err := q.r.enter(1); err != nil {
			return err
		}
		q.r.reap(func(c *cqe) {
			if c.Res >= 0 {
				q.answer(int(c.UserData))
				return
			}
			// The entry is gone. ENOTCONN and ECANCELED are the kernel
			// tearing the ring down at unmount; anything else is ours.
			live--
			if errno := unix.Errno(-c.Res); errno != unix.ENOTCONN && errno != unix.ECANCELED && failed == nil {
				failed = fmt.Errorf("queue %d entry %d: %w", q.qid, c.UserData, errno)
			}
		})
	}
	if failed != nil {
		return failed
	}
	return errQueueStopped
}

// answer serves the request in entry i and queues its COMMIT_AND_FETCH.
func (q *ringQueue) answer(i int) {
	e := &q.entries[i]
	h := (*inHeader)(unsafe.Pointer(&e.header.InOut[0]))
	req := request{
		h:    h,
		arg:  e.header.OpIn[:argSize(h.Opcode)],
		data: e.payload[:e.header.PayloadSz],
	}
	q.h.count.ring.Add(1)
	unique := h.Unique
	commit := e.header.CommitID
	rep := q.h.serve(req, e.payload)
	o := (*outHeader)(unsafe.Pointer(&e.header.InOut[0]))
	n := 0
	if rep.errno == 0 && len(rep.payload) > 0 {
		// Small replies were built in the payload buffer already; file
		// data is copied in here (the one copy /dev/fuse's writev also does).
		if unsafe.SliceData(rep.payload) != unsafe.SliceData(e.payload) {
			copy(e.payload, rep.payload)
		}
		n = len(rep.payload)
	}
	*o = outHeader{Len: uint32(outHeaderSize + n), Error: -int32(rep.errno), Unique: unique}
	e.header.PayloadSz = uint32(n)
	s := q.r.nextSQE()
	q.prepare(s, i, cmdCommitAndFetch).CommitID = commit
}

func (q *ringQueue) close() {
	for _, e := range q.entries {
		_ = unix.Munmap(e.mem)
	}
	q.entries = nil
	if q.r != nil {
		q.r.close()
	}
}
