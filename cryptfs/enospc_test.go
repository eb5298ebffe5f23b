package cryptfs

import (
	"github.com/securevol/securevol/internal/testenv"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestENOSPC fills a small backing file system: the error reaches the
// writer as ENOSPC, and no write that failed, complete or not, leaves a
// block that no longer authenticates.
func TestENOSPC(t *testing.T) {
	testenv.RequireFUSE(t) // and root, for the small tmpfs
	base := t.TempDir()
	small := filepath.Join(base, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=2m"); err != nil {
		testenv.Missing(t, fmt.Sprintf("mount tmpfs: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	m := newTestMountIn(t, small)

	// A file with content that must survive everything below.
	model := pattern(1, 300000)
	if err := os.WriteFile(m.path("keep"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	// Fill the disk: big writes first, then small ones into what a failed
	// big write gave back.
	f, err := os.Create(m.path("filler"))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{64 << 10, 4 << 10, 100} {
		var werr error
		for i := 0; i < 1000 && werr == nil; i++ {
			if _, werr = f.Write(make([]byte, size)); werr == nil {
				werr = f.Sync()
			}
		}
		if !errors.Is(werr, syscall.ENOSPC) {
			f.Close()
			t.Fatalf("filling the disk with %d-byte writes: %v, want ENOSPC", size, werr)
		}
	}
	f.Close()

	// Appends, partial-block overwrites and growing fail with ENOSPC or
	// succeed. The kernel sends a write that starts mid-page as two
	// requests, so a write that fails may have stored a prefix (up to a
	// page edge); each byte it covers must then hold the old or the new
	// value, and every other byte the model's.
	k, err := os.OpenFile(m.path("keep"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	type failed struct {
		off  int
		data []byte
	}
	var maybe []failed
	for i, w := range []struct {
		off int64
		n   int
	}{{int64(len(model)), 5000}, {4096*3 + 7, 10}, {int64(len(model)) - 3, 100000}, {1, 4096 * 20}, {2 << 20, 1}} {
		data := pattern(10+i, w.n)
		n, err := k.WriteAt(data, w.off)
		if err == nil {
			err = k.Sync()
		}
		if err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write %d: %v, want success or ENOSPC", i, err)
		}
		if n > 0 {
			if end := int(w.off) + n; end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[w.off:], data[:n])
		}
		if err != nil {
			maybe = append(maybe, failed{int(w.off) + n, data[n:]})
		}
	}
	if len(maybe) == 0 {
		t.Fatal("no write ran out of space")
	}
	k.Close()
	m.remount()
	got := readFile(t, m.path("keep"))
	if len(got) < len(model) {
		t.Fatalf("file shrank to %d bytes, want %d", len(got), len(model))
	}
	for i, c := range got {
		if i < len(model) && c == model[i] {
			continue
		}
		ok := false
		for _, f := range maybe {
			if i >= f.off && i < f.off+len(f.data) && f.data[i-f.off] == c {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("byte %d is neither old nor from a failed write", i)
		}
	}
	if len(m.loggedContaining("authentication")) != 0 {
		t.Errorf("tamper reports after ENOSPC: %v", m.logs.AllEntries())
	}
	// Space freed, writes work again.
	if err := os.Remove(m.path("filler")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("again"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}
