// Command fuseuring measures the per-request cost of FUSE transports side
// by side in one run: the prototype server of internal/fuseuring over
// /dev/fuse (read+writev) and over io_uring, and go-fuse (what cryptfs
// runs on) serving the same file. Workloads: stat(2) with attribute
// timeout 0 (one GETATTR each) from 1 and 2 threads, and pread(2) of 4 KiB
// and 128 KiB with direct_io (one READ each). Rounds interleave the
// servers; it prints medians with the min–max spread over rounds.
//
// It needs root. For io_uring it sets /sys/module/fuse/parameters/
// enable_uring to Y and restores it on exit.
//
//	go run ./bench/fuseuring [-rounds 7] [-servers classic,uring,gofuse]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/fuseuring"
)

const enableURing = "/sys/module/fuse/parameters/enable_uring"

const fileSize = 8 << 20

type config struct {
	rounds   int
	statOps  int
	readOps  int
	servers  []string
	scratch  string
	perOpLat bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var c config
	var servers string
	flag.IntVar(&c.rounds, "rounds", 7, "interleaved rounds")
	flag.IntVar(&c.statOps, "stat-ops", 20000, "stat calls per thread per step")
	flag.IntVar(&c.readOps, "read-ops", 10000, "preads per step (a quarter for 128 KiB)")
	flag.StringVar(&servers, "servers", "classic,uring,uring-nopin,gofuse", "servers to compare")
	flag.StringVar(&c.scratch, "scratch", os.TempDir(), "where the mount points go")
	flag.Parse()
	c.servers = strings.Split(servers, ",")

	restore, err := enableRing()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuseuring:", err)
		return 1
	}
	defer restore()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		restore()
		os.Exit(130)
	}()

	res, err := measure(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuseuring:", err)
		return 1
	}
	report(c, res)
	return 0
}

// enableRing sets enable_uring to Y and returns what puts it back.
func enableRing() (func(), error) {
	old, err := os.ReadFile(enableURing)
	if err != nil {
		return nil, fmt.Errorf("kernel without FUSE over io_uring? %w", err)
	}
	if err := os.WriteFile(enableURing, []byte("Y"), 0); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := os.WriteFile(enableURing, old, 0); err != nil {
				fmt.Fprintln(os.Stderr, "fuseuring: restore enable_uring:", err)
			}
		})
	}, nil
}

// mounted is one server serving the test file under dir/data.
type mounted interface {
	unmount() error
	// requests is how many GETATTR and READ the server saw, or -1.
	requests() (getattr, read int64)
}

type ours struct{ s *fuseuring.Server }

func (o ours) unmount() error { return o.s.Unmount() }
func (o ours) requests() (int64, int64) {
	c := o.s.Counts()
	return int64(c.Getattr), int64(c.Read)
}

func mountServer(name, dir string, data []byte) (mounted, error) {
	files := map[string][]byte{"data": data}
	switch name {
	case "classic", "uring", "uring-nopin", "uring-defer":
		opts := fuseuring.Options{EntryTimeout: time.Hour}
		if name != "classic" {
			opts.Transport = fuseuring.URing
			opts.Pin = name != "uring-nopin"
			opts.DeferTaskrun = name == "uring-defer"
		}
		s, err := fuseuring.Mount(dir, files, opts)
		if err != nil {
			return nil, err
		}
		if s.Transport() != opts.Transport {
			_ = s.Unmount()
			return nil, fmt.Errorf("%s: the kernel did not offer io_uring", name)
		}
		return ours{s}, nil
	case "gofuse":
		return mountGoFuse(dir, data)
	}
	return nil, fmt.Errorf("unknown server %q", name)
}

// sample is one step's result in one round.
type sample struct {
	usPerOp  float64 // mean latency per call, per thread
	p99      float64 // µs
	mbps     float64 // reads only
	cpuPerOp float64 // µs of process CPU (client and server) per call
}

type key struct{ server, step string }

var steps = []string{"stat 1 thread", "stat 2 threads", "pread 4 KiB", "pread 128 KiB"}

func measure(c config) (map[key][]sample, error) {
	data := make([]byte, fileSize)
	for i := range data {
		data[i] = byte(i)
	}
	res := map[key][]sample{}
	for round := range c.rounds {
		order := slices.Clone(c.servers)
		// Rotate the order so no server always runs first.
		for range round % len(order) {
			order = append(order[1:], order[0])
		}
		for _, name := range order {
			if err := oneServer(c, name, data, res); err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", round+1, name, err)
			}
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", round+1, c.rounds)
	}
	return res, nil
}

func oneServer(c config, name string, data []byte, res map[key][]sample) error {
	dir, err := os.MkdirTemp(c.scratch, "fuseuring-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	m, err := mountServer(name, dir, data)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "data")
	run := func(step string, f func() (sample, error)) error {
		s, err := f()
		if err == nil {
			res[key{name, step}] = append(res[key{name, step}], s)
		}
		return err
	}
	err = errors.Join(
		run(steps[0], func() (sample, error) { return statLoop(m, path, 1, c.statOps) }),
		run(steps[1], func() (sample, error) { return statLoop(m, path, 2, c.statOps) }),
		run(steps[2], func() (sample, error) { return preadLoop(m, path, 4096, c.readOps) }),
		run(steps[3], func() (sample, error) { return preadLoop(m, path, 128<<10, c.readOps/4) }),
	)
	return errors.Join(err, m.unmount())
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// statLoop runs ops stat calls on each of threads OS threads at once.
func statLoop(m mounted, path string, threads, ops int) (sample, error) {
	var st unix.Stat_t
	for range 1000 { // warm up: dentry cached, threads running
		if err := unix.Stat(path, &st); err != nil {
			return sample{}, err
		}
	}
	g0, _ := m.requests()
	lat := make([][]time.Duration, threads)
	errs := make([]error, threads)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range threads {
		lat[i] = make([]time.Duration, ops)
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st unix.Stat_t
			<-start
			for j := range ops {
				t0 := time.Now()
				if err := unix.Stat(path, &st); err != nil {
					errs[i] = err
					return
				}
				lat[i][j] = time.Since(t0)
			}
		})
	}
	cpu0, t0 := cpuTime(), time.Now()
	close(start)
	wg.Wait()
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	if err := errors.Join(errs...); err != nil {
		return sample{}, err
	}
	total := threads * ops
	if g1, _ := m.requests(); g1 >= 0 && g1-g0 != int64(total) {
		return sample{}, fmt.Errorf("%d stats sent %d GETATTR", total, g1-g0)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return sample{
		usPerOp:  us(wall) * float64(threads) / float64(total),
		p99:      us(all[len(all)*99/100]),
		cpuPerOp: us(cpu) / float64(total),
	}, nil
}

// preadLoop reads the file sequentially in size chunks, wrapping around.
func preadLoop(m mounted, path string, size, ops int) (sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return sample{}, err
	}
	defer f.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, size)
	fd := int(f.Fd())
	off := int64(0)
	read := func() error {
		n, err := unix.Pread(fd, buf, off)
		if err != nil || n != size {
			return fmt.Errorf("pread %d at %d: %d, %v", size, off, n, err)
		}
		if off += int64(size); off >= fileSize {
			off = 0
		}
		return nil
	}
	for range 100 {
		if err := read(); err != nil {
			return sample{}, err
		}
	}
	_, r0 := m.requests()
	lat := make([]time.Duration, ops)
	cpu0, t0 := cpuTime(), time.Now()
	for i := range ops {
		t := time.Now()
		if err := read(); err != nil {
			return sample{}, err
		}
		lat[i] = time.Since(t)
	}
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	if _, r1 := m.requests(); r1 >= 0 && r1-r0 != int64(ops) {
		return sample{}, fmt.Errorf("%d preads sent %d READ", ops, r1-r0)
	}
	slices.Sort(lat)
	return sample{
		usPerOp:  us(wall) / float64(ops),
		p99:      us(lat[len(lat)*99/100]),
		mbps:     float64(size*ops) / wall.Seconds() / 1e6,
		cpuPerOp: us(cpu) / float64(ops),
	}, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
