package fuseuring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Transport is how requests travel between the kernel and the server.
type Transport int

const (
	// Classic is read(2) and writev(2) on /dev/fuse.
	Classic Transport = iota
	// URing is FUSE over io_uring, when the kernel offers it at INIT
	// (CONFIG_FUSE_IO_URING and the fuse module's enable_uring); the
	// server falls back to Classic when it does not.
	URing
)

func (t Transport) String() string {
	if t == URing {
		return "io_uring"
	}
	return "classic"
}

// Options configure a mount.
type Options struct {
	Transport Transport
	// Readers is how many goroutines read /dev/fuse (runtime.NumCPU()
	// when 0). With io_uring they only see FORGET and INTERRUPT.
	Readers int
	// Pin binds each ring queue's thread to the CPU the queue serves.
	Pin bool
	// DeferTaskrun sets up the rings with IORING_SETUP_DEFER_TASKRUN:
	// the kernel hands a queue its requests only while the queue's thread
	// waits in io_uring_enter, instead of interrupting it.
	DeferTaskrun bool
	// EntryTimeout and AttrTimeout are what LOOKUP and GETATTR replies
	// let the kernel cache, in whole seconds.
	EntryTimeout, AttrTimeout time.Duration
}

// Errors.
var (
	ErrInitTimeout = errors.New("fuseuring: the kernel sent no INIT")
)

// Server is one mounted instance.
type Server struct {
	dir    string
	fd     int
	opts   Options
	h      *handler
	inited chan struct{} // closed once INIT is answered and the ring is up
	ringOn atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error // first failure of a reader or queue
}

// Mount serves files (name → content) as the root directory of dir.
func Mount(dir string, files map[string][]byte, opts Options) (*Server, error) {
	if opts.Readers == 0 {
		opts.Readers = runtime.NumCPU()
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	s := &Server{dir: dir, fd: fd, opts: opts, inited: make(chan struct{}),
		h: &handler{t: newTree(files, opts.EntryTimeout, opts.AttrTimeout)}}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("fuseuring", dir, "fuse.fuseuring", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	for range opts.Readers {
		s.wg.Add(1)
		go s.readLoop()
	}
	select {
	case <-s.inited:
	case <-time.After(10 * time.Second):
		_ = s.Unmount()
		return nil, ErrInitTimeout
	}
	if err := s.failure(); err != nil {
		_ = s.Unmount()
		return nil, err
	}
	if err := s.disablePoll(files); err != nil {
		_ = s.Unmount()
		return nil, err
	}
	return s, nil
}

// disablePoll makes the kernel learn that we do not implement POLL before
// a Go client in this process opens a file: os.Open registers every file
// with the runtime's epoll, from a thread the runtime believes is running
// Go code. FUSE turns that into a POLL request; if a garbage collection
// wants to stop the world meanwhile, it waits for that thread, and our
// reader never gets to answer: a deadlock. Asking once through a blocking
// system call (unix.Syscall6: unix.EpollCtl is a raw one too) gets the
// ENOSYS that makes the kernel stop sending POLL (go-fuse does the same
// with a hidden file).
func (s *Server) disablePoll(files map[string][]byte) error {
	for name := range files {
		fd, err := unix.Open(s.dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("poll probe: %w", err)
		}
		defer unix.Close(fd)
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("poll probe: %w", err)
		}
		defer unix.Close(ep)
		// EPERM once the kernel knows; the answer does not matter.
		ev := unix.EpollEvent{Events: unix.EPOLLIN}
		_, _, _ = unix.Syscall6(unix.SYS_EPOLL_CTL, uintptr(ep), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
		return nil
	}
	return nil
}

// Transport is the transport in use, known once Mount returns.
func (s *Server) Transport() Transport {
	if s.ringOn.Load() {
		return URing
	}
	return Classic
}

// Counts are the requests answered so far.
func (s *Server) Counts() Counts { return s.h.count.snapshot() }

// Unmount detaches the file system and waits for the server to stop.
func (s *Server) Unmount() error {
	err := unix.Unmount(s.dir, 0)
	if err != nil {
		err = fmt.Errorf("unmount %s: %w", s.dir, err)
		// Busy: detach it anyway so the server can stop.
		_ = unix.Unmount(s.dir, unix.MNT_DETACH)
	}
	s.wg.Wait()
	_ = unix.Close(s.fd)
	return errors.Join(err, s.failure())
}

func (s *Server) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *Server) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// readLoop serves /dev/fuse until the connection ends.
func (s *Server) readLoop() {
	defer s.wg.Done()
	// Large enough for a request carrying max_write bytes.
	buf := make([]byte, inHeaderSize+4096+maxWrite)
	out := make([]byte, maxReplyHeader)
	for {
		n, err := unix.Read(s.fd, buf)
		switch {
		case errors.Is(err, unix.ENODEV):
			return
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			s.fail(fmt.Errorf("read /dev/fuse: %w", err))
			return
		case n < inHeaderSize:
			s.fail(fmt.Errorf("read /dev/fuse: short request of %d bytes", n))
			return
		}
		h := view[inHeader](buf)
		body := buf[inHeaderSize:n]
		if h.Opcode == opInit {
			s.init(h.Unique, body)
			continue
		}
		as := min(argSize(h.Opcode), len(body))
		rep := s.h.serve(request{h: h, arg: body[:as], data: body[as:]}, out)
		if !rep.none {
			s.write(h.Unique, rep)
		}
	}
}

func (s *Server) write(unique uint64, rep reply) {
	o := outHeader{Len: uint32(outHeaderSize), Error: -int32(rep.errno), Unique: unique}
	iov := [][]byte{bytesOf(&o)}
	if rep.errno == 0 && len(rep.payload) > 0 {
		o.Len += uint32(len(rep.payload))
		iov = append(iov, rep.payload)
	}
	// ENOENT: the request was interrupted and is gone; nothing to do.
	if _, err := unix.Writev(s.fd, iov); err != nil && !errors.Is(err, unix.ENOENT) {
		s.fail(fmt.Errorf("write /dev/fuse: %w", err))
	}
}

// init answers INIT and, when io_uring was asked for and the kernel offers
// it, starts the ring queues; Mount returns once they are registered.
func (s *Server) init(unique uint64, body []byte) {
	defer close(s.inited)
	if len(body) < int(unsafe.Offsetof(initIn{}.Flags2)) {
		s.fail(fmt.Errorf("INIT of %d bytes", len(body)))
		return
	}
	var in initIn
	copy(bytesOf(&in), body)
	if in.Flags&initExt == 0 {
		in.Flags2 = 0
	}
	uring := s.opts.Transport == URing && in.Flags2&initOverURing2 != 0
	out := initOut{
		Major: kernelMajor, Minor: min(in.Minor, kernelMinor),
		MaxReadahead:  in.MaxReadahead,
		Flags:         in.Flags & (initAsyncRead | initBigWrites | initMaxPages | initExt),
		MaxBackground: 64, CongestionThreshold: 48,
		MaxWrite: maxWrite, TimeGran: 1, MaxPages: maxPages,
	}
	if uring {
		out.Flags2 = initOverURing2
	}
	s.write(unique, reply{payload: bytesOf(&out)})
	if uring {
		s.startRing()
	}
}

// startRing sets up one queue per possible CPU and waits until each has
// registered its entries: the kernel holds requests back until all have.
func (s *Server) startRing() {
	n, err := possibleCPUs()
	if err != nil {
		s.fail(err)
		return
	}
	registered := make(chan error, n)
	for qid := range n {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := serveQueue(uint16(qid), s.fd, s.h, s.opts, registered)
			if !errors.Is(err, errQueueStopped) {
				s.fail(err)
			}
		}()
	}
	for range n {
		if err := <-registered; err != nil {
			s.fail(err)
			return
		}
	}
	s.ringOn.Store(true)
}

// possibleCPUs is the kernel's num_possible_cpus(), the number of queues
// it expects.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, fmt.Errorf("count CPUs: %w", err)
	}
	s := strings.TrimSpace(string(b))
	last := s[strings.LastIndexAny(s, ",-")+1:]
	n, err := strconv.Atoi(last)
	if err != nil {
		return 0, fmt.Errorf("count CPUs in %q: %w", s, err)
	}
	return n + 1, nil
}
