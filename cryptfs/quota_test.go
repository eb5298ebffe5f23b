package cryptfs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
)

// newQuotaMount mounts a fresh volume limited to limit bytes.
func newQuotaMount(t *testing.T, limit int64) (*testMount, *Quota) {
	t.Helper()
	q := NewQuota(limit)
	return newTestMountOpts(t, Options{Quota: q}), q
}

// walked is what a fresh walk of the backing folder counts.
func (m *testMount) walked() int64 {
	m.t.Helper()
	var size int64
	err := backing.WithRoot(m.backing, func(root *backing.Dir) (err error) {
		size, _, err = backing.Usage(root, math.MaxInt)
		return err
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return size
}

// requireCounted fails unless the live count equals a fresh walk. The
// kernel sends RELEASE after close(2) returns, so a file closed just now
// may still be counted for a moment: it waits a little for that.
func (m *testMount) requireCounted(q *Quota, what string) {
	m.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		used, walked := q.Used(), m.walked()
		if used == walked {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: counted %d bytes, the backing folder holds %d", what, used, walked)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fill appends chunk-byte writes to p until one fails, and returns that
// error and how much was written.
func fill(p string, chunk int) (int64, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := pattern(7, chunk)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// TestQuotaFillDeleteRestart is the story: fill to the limit and
// get ENOSPC from write(2) and from growing with truncate; delete, write
// again; restart (a new mount, a new count from the walk) and the limit
// still holds at the same point.
func TestQuotaFillDeleteRestart(t *testing.T) {
	const limit = 1 << 20
	m, q := newQuotaMount(t, limit)
	base := q.Used()
	if base <= 0 || base != m.walked() {
		t.Fatalf("empty volume counted %d, walk says %d", base, m.walked())
	}

	n, err := fill(m.path("big"), 64<<10)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling: %v after %d bytes, want ENOSPC", err, n)
	}
	if u := q.Used(); u > limit || u < limit-(64<<10)-(64<<10)/4096*28-4096 {
		t.Fatalf("full at %d bytes counted (wrote %d), want just under %d", u, n, limit)
	}
	m.requireCounted(q, "full")
	// Small writes fill what the big one could not, to the byte.
	n2, err := fill(m.path("big"), 100)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling with small writes: %v", err)
	}
	if room := limit - q.Used(); room >= 100+28 {
		t.Fatalf("%d bytes left after small writes (%d written), want fewer than one write", room, n2)
	}
	// Growing a file (sparse or not) counts its ciphertext in full.
	if err := os.WriteFile(m.path("small"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.path("small"), 10<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("truncate past the limit: %v, want ENOSPC", err)
	}
	if err := os.Mkdir(m.path("dir"), 0o755); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("mkdir on a full volume: %v, want ENOSPC", err)
	}
	// Overwrites inside the size cost nothing.
	f, err := os.OpenFile(m.path("big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern(3, 200<<10), 1000); err != nil {
		t.Fatalf("overwrite on a full volume: %v", err)
	}
	f.Close()
	full := q.Used()
	m.requireCounted(q, "after overwrite")

	if err := os.Remove(m.path("big")); err != nil {
		t.Fatal(err)
	}
	m.requireCounted(q, "after delete")
	if q.Used() > base+200 {
		t.Fatalf("after delete %d counted, want about %d", q.Used(), base)
	}
	if err := os.WriteFile(m.path("again"), pattern(4, 500<<10), 0o644); err != nil {
		t.Fatalf("write after delete: %v", err)
	}
	before := q.Used()

	// Restart: a new mount counts from the folder and enforces the same.
	m.unmount()
	q = NewQuota(limit)
	m.opts.Quota = q
	m.mount()
	if q.Used() != before {
		t.Fatalf("after remount %d counted, before unmount %d", q.Used(), before)
	}
	if _, err := fill(m.path("again"), 64<<10); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after remount: %v, want ENOSPC", err)
	}
	if u := q.Used(); u > limit || u < full-(64<<10)-4096 {
		t.Fatalf("after remount full at %d, want about %d", u, full)
	}
	m.requireCounted(q, "full after remount")
}

// TestQuotaCountsEveryChange runs each kind of change the mount makes to
// the backing folder and checks the live count against a fresh walk.
func TestQuotaCountsEveryChange(t *testing.T) {
	m, q := newQuotaMount(t, 64<<20)
	long := strings.Repeat("l", 200) // stored with a sidecar
	steps := []struct {
		name string
		do   func() error
	}{
		{"write", func() error { return os.WriteFile(m.path("a"), pattern(1, 10000), 0o644) }},
		{"append", func() error { return appendTo(m.path("a"), pattern(2, 5000)) }},
		{"sparse write", func() error { return writeFileAt(m.path("sparse"), []byte("x"), 5<<20) }},
		{"truncate down mid-block", func() error { return os.Truncate(m.path("a"), 6000) }},
		{"truncate up", func() error { return os.Truncate(m.path("a"), 70000) }},
		{"truncate to zero", func() error { return os.Truncate(m.path("sparse"), 0) }},
		{"O_TRUNC", func() error { return os.WriteFile(m.path("a"), []byte("short"), 0o644) }},
		{"fallocate", func() error { return fallocate(m.path("a"), 0, 0, 100000) }},
		{"mkdir", func() error { return os.Mkdir(m.path("d"), 0o755) }},
		{"mkdir long", func() error { return os.Mkdir(m.path("d", long), 0o755) }},
		{"create long", func() error { return os.WriteFile(m.path("d", long, long), pattern(3, 3000), 0o644) }},
		{"symlink", func() error { return os.Symlink("target", m.path("s")) }},
		{"symlink long target", func() error { return os.Symlink(strings.Repeat("t/", 1000), m.path("slong")) }},
		{"hard link", func() error { return os.Link(m.path("a"), m.path("d", "a2")) }},
		{"unlink one link", func() error { return os.Remove(m.path("a")) }},
		{"rename over file", func() error {
			if err := os.WriteFile(m.path("b"), pattern(5, 9000), 0o644); err != nil {
				return err
			}
			return os.Rename(m.path("b"), m.path("d", "a2"))
		}},
		{"rename long over long", func() error {
			if err := os.WriteFile(m.path(long), pattern(6, 100), 0o644); err != nil {
				return err
			}
			return os.Rename(m.path(long), m.path("d", long, long))
		}},
		{"rename over empty dir", func() error {
			if err := os.Mkdir(m.path("e"), 0o755); err != nil {
				return err
			}
			if err := os.Mkdir(m.path("f"), 0o755); err != nil {
				return err
			}
			return unix.Rename(m.path("e"), m.path("f")) // os.Rename refuses directories
		}},
		{"xattr", func() error { return unix.Setxattr(m.path("d", "a2"), "user.x", []byte("v"), 0) }},
		{"fifo", func() error { return unix.Mkfifo(m.path("fifo"), 0o644) }},
		{"tmpfile", func() error {
			fd, err := unix.Open(m.dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
			if err != nil {
				return err
			}
			_, err = unix.Write(fd, pattern(8, 20000))
			unix.Close(fd)
			return err
		}},
		{"unlink symlinks", func() error {
			if err := os.Remove(m.path("s")); err != nil {
				return err
			}
			return os.Remove(m.path("slong"))
		}},
		{"remove tree", func() error { return os.RemoveAll(m.path("d")) }},
		{"remove rest", func() error {
			for _, p := range []string{"sparse", "f", "fifo"} {
				if err := os.Remove(m.path(p)); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	base := q.Used()
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		m.requireCounted(q, s.name)
	}
	if q.Used() != base {
		t.Fatalf("everything removed: %d counted, the empty volume had %d", q.Used(), base)
	}
}

// TestQuotaUnlinkedOpenFile: an unlinked file's space is held, and
// counted, until its last descriptor closes, also if it keeps growing.
func TestQuotaUnlinkedOpenFile(t *testing.T) {
	m, q := newQuotaMount(t, 8<<20)
	base := q.Used()
	f, err := os.Create(m.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(pattern(1, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("open")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(pattern(2, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if u := q.Used(); u < base+2<<20 {
		t.Fatalf("unlinked but open: %d counted, want at least %d", u, base+2<<20)
	}
	f.Close()
	m.requireCounted(q, "closed")
	if q.Used() != base {
		t.Fatalf("closed: %d counted, want %d", q.Used(), base)
	}
}

// TestQuotaConcurrentWriters: writers to different files together never
// get past the limit, and the count stays exact.
func TestQuotaConcurrentWriters(t *testing.T) {
	const limit = 4 << 20
	m, q := newQuotaMount(t, limit)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = fill(m.path(fmt.Sprint("w", i)), 4096+i*1500)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("writer %d: %v, want ENOSPC", i, err)
		}
	}
	if u := q.Used(); u > limit {
		t.Fatalf("%d bytes counted, over the limit %d", u, limit)
	}
	m.requireCounted(q, "after concurrent writers")
	if w := m.walked(); w > limit {
		t.Fatalf("the backing folder holds %d bytes, over the limit %d", w, limit)
	}
}

// TestQuotaStatfs: df shows the limit as the size and the room left as
// free.
func TestQuotaStatfs(t *testing.T) {
	const limit = 10 << 20
	m, q := newQuotaMount(t, limit)
	if err := os.WriteFile(m.path("f"), pattern(1, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	unit := uint64(st.Frsize)
	if got := st.Blocks * unit; got > limit || got <= limit-unit {
		t.Errorf("size %d, want %d", got, limit)
	}
	room := uint64(limit - q.Used())
	for name, free := range map[string]uint64{"free": st.Bfree * unit, "available": st.Bavail * unit} {
		if free > room || free <= room-unit {
			t.Errorf("%s %d, want %d (limit %d, used %d)", name, free, room, limit, q.Used())
		}
	}

	// Without a limit, the backing file system's numbers.
	plain := newTestMount(t)
	var want, got unix.Statfs_t
	if err := unix.Statfs(plain.backing, &want); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(plain.dir, &got); err != nil {
		t.Fatal(err)
	}
	if got.Blocks != want.Blocks {
		t.Errorf("no limit: %d blocks, the backing file system has %d", got.Blocks, want.Blocks)
	}
}

// TestQuotaOverLimitStillEmpties: a volume that holds more than its limit
// (mounted with a smaller one) refuses growth but allows every removal.
func TestQuotaOverLimitStillEmpties(t *testing.T) {
	m, q := newQuotaMount(t, 4<<20)
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("d", "f"), pattern(1, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	q = NewQuota(1 << 20)
	m.opts.Quota = q
	m.mount()
	if err := appendTo(m.path("d", "f"), []byte("x")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append over the limit: %v, want ENOSPC", err)
	}
	if err := os.Truncate(m.path("d", "f"), 1000); err != nil {
		t.Fatalf("shrink over the limit: %v", err)
	}
	if err := os.RemoveAll(m.path("d")); err != nil {
		t.Fatalf("remove over the limit: %v", err)
	}
	m.requireCounted(q, "emptied")
}

// TestQuotaKeepSizePastEnd: space reserved past the end shows in no size,
// so under a limit it is refused rather than left uncounted.
func TestQuotaKeepSizePastEnd(t *testing.T) {
	m, q := newQuotaMount(t, 4<<20)
	if err := os.WriteFile(m.path("f"), pattern(1, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fallocate(m.path("f"), unix.FALLOC_FL_KEEP_SIZE, 0, 100<<20); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("KEEP_SIZE past the end: %v, want EOPNOTSUPP", err)
	}
	if err := fallocate(m.path("f"), unix.FALLOC_FL_KEEP_SIZE, 0, 8000); err != nil {
		t.Fatalf("KEEP_SIZE inside the file: %v", err)
	}
	if err := fallocate(m.path("f"), 0, 0, 100<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fallocate past the limit: %v, want ENOSPC", err)
	}
	m.requireCounted(q, "after fallocate")
}

func appendTo(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeFileAt(p string, data []byte, off int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fallocate(p string, mode uint32, off, length int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), mode, off, length)
}
