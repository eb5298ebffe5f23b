package fuseuring

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

const enableURing = "/sys/module/fuse/parameters/enable_uring"

// setURing makes the kernel offer FUSE over io_uring at INIT (on) or not,
// and puts the module parameter back after the test. Only a kernel built
// without it skips, with CI=true too: CI's kernel is not ours to choose.
func setURing(t *testing.T, on bool) {
	t.Helper()
	old, err := os.ReadFile(enableURing)
	if os.IsNotExist(err) {
		t.Skip("skipping: kernel without FUSE over io_uring (CONFIG_FUSE_IO_URING)")
	}
	if err != nil {
		t.Fatal(err)
	}
	want := "N"
	if on {
		want = "Y"
	}
	if strings.TrimSpace(string(old)) == want {
		return
	}
	if err := os.WriteFile(enableURing, []byte(want), 0); err != nil {
		t.Fatalf("set %s: %v", enableURing, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(enableURing, old, 0); err != nil {
			t.Errorf("restore %s: %v", enableURing, err)
		}
	})
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// TestTransports mounts the same tree over each transport and checks that
// stat, pread and statfs see it, one request per stat and per read, and
// that the io_uring mount really served them through the ring.
func TestTransports(t *testing.T) {
	testenv.RequireFUSE(t)
	content := pattern(1 << 20)
	for _, tr := range []Transport{Classic, URing} {
		t.Run(tr.String(), func(t *testing.T) {
			if tr == URing {
				setURing(t, true)
			}
			dir := t.TempDir()
			s, err := Mount(dir, map[string][]byte{"data": content}, Options{Transport: tr, EntryTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Unmount(); err != nil {
					t.Error(err)
				}
			}()
			if s.Transport() != tr {
				t.Fatalf("transport %v, want %v", s.Transport(), tr)
			}
			checkServes(t, s, filepath.Join(dir, "data"), content)
			if c := s.Counts(); tr == URing && c.Ring < c.Getattr+c.Read {
				t.Errorf("io_uring mount: %d requests through the ring, want at least the %d GETATTR and READ", c.Ring, c.Getattr+c.Read)
			} else if tr == Classic && c.Ring != 0 {
				t.Errorf("classic mount: %d requests through the ring", c.Ring)
			}
		})
	}
}

func checkServes(t *testing.T, s *Server, path string, content []byte) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(content)) || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Fatalf("stat: size %d mode %o", st.Size, st.Mode)
	}
	// Attributes time out at once: every stat is one GETATTR.
	before := s.Counts().Getattr
	const stats = 50
	for range stats {
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Counts().Getattr - before; got != stats {
		t.Errorf("%d stats sent %d GETATTR, want %d", stats, got, stats)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// direct_io: every pread is exactly one READ, 128 KiB included.
	before = s.Counts().Read
	for _, size := range []int{4096, 128 << 10} {
		buf := make([]byte, size)
		off := int64(len(content) - 2*size + 123)
		n, err := f.ReadAt(buf, off)
		if err != nil || n != size || !bytes.Equal(buf, content[off:off+int64(size)]) {
			t.Fatalf("pread %d at %d: n=%d err=%v, or wrong bytes", size, off, n, err)
		}
	}
	if got := s.Counts().Read - before; got != 2 {
		t.Errorf("2 preads sent %d READ, want 2", got)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &sfs); err != nil || sfs.Bsize != 4096 {
		t.Errorf("statfs: bsize %d, %v", sfs.Bsize, err)
	}
}

// TestURingFallsBack: when the kernel does not offer io_uring at INIT, a
// server that asked for it serves through /dev/fuse instead.
func TestURingFallsBack(t *testing.T) {
	testenv.RequireFUSE(t)
	setURing(t, false)
	content := pattern(1 << 20)
	dir := t.TempDir()
	s, err := Mount(dir, map[string][]byte{"data": content}, Options{Transport: URing, EntryTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	if s.Transport() != Classic {
		t.Fatalf("transport %v with io_uring disabled, want classic", s.Transport())
	}
	checkServes(t, s, filepath.Join(dir, "data"), content)
	if c := s.Counts(); c.Ring != 0 {
		t.Errorf("%d requests through a ring the kernel did not offer", c.Ring)
	}
}
