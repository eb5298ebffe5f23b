package cryptfs

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// pattern returns n bytes that differ from block to block and from file
// to file (seed), so misplaced blocks show.
func pattern(seed, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func checkContent(t *testing.T, p string, want []byte) {
	t.Helper()
	got := readFile(t, p)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at offset %d", p, len(got), len(want), i)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(want)) {
		t.Fatalf("%s: stat size %d, want %d", p, fi.Size(), len(want))
	}
}

// backingSize is the size of the single backing file of plaintext file name
// in the root directory.
func (m *testMount) backingSizeOf(name string) int64 {
	m.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(m.path(name), &st); err != nil {
		m.t.Fatal(err)
	}
	for _, rel := range m.backingFiles() {
		var bst syscall.Stat_t
		if err := syscall.Stat(filepath.Join(m.backing, rel), &bst); err == nil && bst.Ino == st.Ino {
			return bst.Size
		}
	}
	m.t.Fatalf("no backing file for %s", name)
	return 0
}

func TestRoundTripBlockEdges(t *testing.T) {
	m := newTestMount(t)
	sizes := []int{0, 1, 17, 4095, 4096, 4097, 2*4096 - 1, 3*4096 + 5, 64 << 10, 1<<20 + 7, 3<<20 + 4095}
	for i, size := range sizes {
		name := fmt.Sprintf("f%d", size)
		if err := os.WriteFile(m.path(name), pattern(i, size), 0o644); err != nil {
			t.Fatalf("write %d bytes: %v", size, err)
		}
	}
	m.remount() // read through our decryption, not the page cache
	for i, size := range sizes {
		name := fmt.Sprintf("f%d", size)
		checkContent(t, m.path(name), pattern(i, size))
		if got, want := m.backingSizeOf(name), int64(crypto.CipherSize(uint64(size))); got != want {
			t.Errorf("%s: backing size %d, want %d", name, got, want)
		}
	}
}

// TestWritesAtOddOffsets replays writes at unaligned offsets, past the end
// and across block edges against an in-memory model.
func TestWritesAtOddOffsets(t *testing.T) {
	m := newTestMount(t)
	type op struct{ off, n int }
	ops := []op{
		{0, 10}, {5, 4091}, {4095, 2}, {4096 * 3, 1}, // hole at blocks 1-2
		{100, 5000}, {4096*3 - 3, 7}, {12000, 20000}, {1, 1},
		{40000, 4096}, {4096*2 + 1, 4096 * 4}, {8190, 3}, {70000, 131072 + 9},
		{0, 300000}, {299999, 2}, {123456, 65536 * 3},
	}
	f, err := os.Create(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	var model []byte
	for i, o := range ops {
		data := pattern(100+i, o.n)
		if _, err := f.WriteAt(data, int64(o.off)); err != nil {
			t.Fatalf("op %d %+v: %v", i, o, err)
		}
		if end := o.off + o.n; end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[o.off:], data)
		// Read back through a second descriptor after each step; every
		// fifth step also bypasses all caches.
		if i%5 == 4 {
			f.Close()
			m.remount()
			if f, err = os.OpenFile(m.path("f"), os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			}
		}
		checkContent(t, m.path("f"), model)
	}
	f.Close()
}

func TestAppend(t *testing.T) {
	m := newTestMount(t)
	var want []byte
	for i, n := range []int{1, 4095, 3, 4096, 5000, 100000, 7} {
		f, err := os.OpenFile(m.path("log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(i, n)
		// An offset given to write(2) is ignored under O_APPEND.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want = append(want, data...)
	}
	m.remount()
	checkContent(t, m.path("log"), want)
}

func TestTruncate(t *testing.T) {
	m := newTestMount(t)
	cases := []struct{ from, to int }{
		{0, 0}, {0, 1}, {0, 4096}, {0, 10000}, {10, 0}, {10, 5}, {10, 4096}, {10, 4097},
		{4096, 4095}, {4096, 4097}, {3*4096 + 5, 4096 + 1}, {3*4096 + 5, 2 * 4096},
		{100, 1 << 20}, {1<<20 + 3, 17}, {5000, 5000},
	}
	for i, c := range cases {
		name := fmt.Sprintf("t%d", i)
		orig := pattern(i, c.from)
		if err := os.WriteFile(m.path(name), orig, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(m.path(name), int64(c.to)); err != nil {
			t.Fatalf("truncate %d→%d: %v", c.from, c.to, err)
		}
	}
	m.remount()
	for i, c := range cases {
		name := fmt.Sprintf("t%d", i)
		want := make([]byte, c.to)
		copy(want, pattern(i, c.from))
		checkContent(t, m.path(name), want)
		if got, w := m.backingSizeOf(name), int64(crypto.CipherSize(uint64(c.to))); got != w {
			t.Errorf("%d→%d: backing size %d, want %d", c.from, c.to, got, w)
		}
	}
	// Truncate through an open descriptor, then keep writing.
	f, err := os.OpenFile(m.path("t5"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("xyz"), 4100); err != nil {
		t.Fatal(err)
	}
	want := append(append(pattern(5, 10)[:3], make([]byte, 4097)...), "xyz"...)
	m2 := readFile(t, m.path("t5"))
	if !bytes.Equal(m2, want) {
		t.Fatalf("truncate then write: got %d bytes, want %d", len(m2), len(want))
	}
	f.Close()
	// O_TRUNC on open empties the file and a new write starts afresh.
	if err := os.WriteFile(m.path("t5"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.remount()
	checkContent(t, m.path("t5"), []byte("new"))
}

func TestSparse(t *testing.T) {
	m := newTestMount(t)
	f, err := os.Create(m.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	const off = 64 << 20
	if _, err := f.WriteAt([]byte("end"), off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m.remount()
	fi, err := os.Stat(m.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != off+3 {
		t.Fatalf("size %d, want %d", fi.Size(), off+3)
	}
	// The hole costs no disk space.
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("sparse file occupies %d bytes", blocks*512)
	}
	f, err = os.Open(m.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, at := range []int64{0, 12345, off - 1<<20} {
		if _, err := f.ReadAt(buf, at); err != nil {
			t.Fatalf("read hole at %d: %v", at, err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatalf("hole at %d is not zero", at)
		}
	}
	tail := make([]byte, 10)
	n, _ := f.ReadAt(tail, off-7)
	if want := append(make([]byte, 7), "end"...); !bytes.Equal(tail[:n], want) {
		t.Fatalf("tail %q, want %q", tail[:n], want)
	}
}

func TestFallocate(t *testing.T) {
	m := newTestMount(t)
	f, err := os.Create(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if _, err := f.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
		t.Fatalf("KEEP_SIZE: %v", err)
	}
	if fi, _ := f.Stat(); fi.Size() != 5 {
		t.Fatalf("KEEP_SIZE changed the size to %d", fi.Size())
	}
	if err := unix.Fallocate(fd, 0, 4000, 5000); err != nil {
		t.Fatalf("mode 0: %v", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != unix.EOPNOTSUPP {
		t.Fatalf("punch hole: %v, want EOPNOTSUPP", err)
	}
	f.Close()
	m.remount()
	checkContent(t, m.path("f"), append([]byte("hello"), make([]byte, 9000-5)...))
}

// startInterleavedWriters starts writers goroutines that write want in
// interleaved chunk-byte pieces over rounds rounds; writer w uses
// names[w%len(names)] (several names: hard links to one file).
func startInterleavedWriters(wg *sync.WaitGroup, errs chan<- error, names []string, want []byte, writers, chunk, rounds int) {
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(names[w%len(names)], os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for r := 0; r < rounds; r++ {
				off := (r*writers + w) * chunk
				if _, err := f.WriteAt(want[off:off+chunk], int64(off)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
}

// TestConcurrentWriters has writers fill interleaved, unaligned regions of
// one file at once; the per-inode lock must keep every partial block's
// read-modify-write whole.
func TestConcurrentWriters(t *testing.T) {
	m := newTestMount(t)
	const writers, chunk, rounds = 8, 1000, 200
	size := writers * chunk * rounds
	want := pattern(7, size)
	if err := os.WriteFile(m.path("shared"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	startInterleavedWriters(&wg, errs, []string{m.path("shared")}, want, writers, chunk, rounds)
	// Readers bypass the page cache and race the writers: every read
	// must succeed (a torn ciphertext block would fail authentication)
	// and see each write either not yet done (zeros) or complete.
	stop := make(chan struct{})
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func() {
			defer rg.Done()
			fd, err := unix.Open(m.path("shared"), unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			buf := make([]byte, 256*chunk)
			for off := 0; ; off = (off + len(buf)) % size {
				select {
				case <-stop:
					return
				default:
				}
				n, err := unix.Pread(fd, buf, int64(off))
				if err != nil {
					errs <- fmt.Errorf("read during writes: %w", err)
					return
				}
				// The kernel may split one write(2) at page edges into
				// several requests, so only each part of a chunk within
				// one page (one block) is atomic.
				for c := 0; c < n; {
					next := min(c+chunk-(off+c)%chunk, c+4096-(off+c)%4096, n)
					got, w := buf[c:next], want[off+c:off+next]
					if !bytes.Equal(got, w) && !bytes.Equal(got, make([]byte, len(got))) {
						errs <- fmt.Errorf("torn read at %d+%d", off+c, len(got))
						return
					}
					c = next
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkContent(t, m.path("shared"), want)
	m.remount()
	checkContent(t, m.path("shared"), want)
}

func TestMmap(t *testing.T) {
	m := newTestMount(t)
	// The mount is served by this process: a page fault on the mapping
	// waits for a READ that a server goroutine answers, while a garbage
	// collection waits for the faulting goroutine to stop: deadlock
	// (seen under -race). No collections while mapped.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	const size = 3*4096 + 100
	if err := os.WriteFile(m.path("map"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("map"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(3, size)
	copy(mem, want)
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m.remount()
	checkContent(t, m.path("map"), want)
	// And reading through a mapping.
	f, err = os.Open(m.path("map"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err = unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem, want) {
		t.Fatal("mapped content differs")
	}
}
