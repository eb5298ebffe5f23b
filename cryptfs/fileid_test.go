package cryptfs

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// A backing file no longer than a header holds no block, so nothing binds
// the file ID in it to that file: an attacker who copies file A's header
// over file B must not get B's next blocks sealed under A's ID, or those
// blocks could be spliced into A and would decrypt there.
func TestHeaderOnlyFileGetsFreshID(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, p string)
		block uint64 // a block the write sealed, to splice into a
	}{
		{"write at 0", func(t *testing.T, p string) {
			writeAt(t, p, pattern(7, 4096), 0)
		}, 0},
		{"write past end", func(t *testing.T, p string) {
			writeAt(t, p, pattern(7, 4096), 4096)
		}, 1},
		{"truncate up, then write", func(t *testing.T, p string) {
			if err := os.Truncate(p, 8192); err != nil {
				t.Fatal(err)
			}
			writeAt(t, p, pattern(7, 4096), 0)
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMount(t)
			a := pattern(1, 3*4096)
			if err := os.WriteFile(m.path("a"), a, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.path("b"), []byte("b"), 0o644); err != nil {
				t.Fatal(err)
			}
			ba, bb := m.backingOf("a"), m.backingOf("b")
			m.offline(func() {
				hdr := readN(t, ba, crypto.FileHeaderSize)
				if err := os.WriteFile(bb, hdr, 0o600); err != nil {
					t.Fatal(err)
				}
			})
			if got := readFile(t, m.path("b")); len(got) != 0 {
				t.Fatalf("header-only b reads %d bytes, want 0", len(got))
			}
			tc.write(t, m.path("b"))
			m.offline(func() {
				hb := readN(t, bb, crypto.FileHeaderSize)
				if bytes.Equal(hb, readN(t, ba, crypto.FileHeaderSize)) {
					t.Error("b kept a's file ID")
				}
				// Splice b's block into a at the same index.
				at := crypto.BlockOffset(tc.block)
				blk := readN(t, bb, crypto.BlockOffset(tc.block+1))[at:]
				patchFile(t, ba, func(c []byte) []byte {
					copy(c[at:], blk)
					return c
				})
			})
			at := int64(tc.block) * 4096
			if _, err := preadDirect(t, m.path("a"), 4096, at); !isErrno(err, syscall.EIO) {
				t.Errorf("a with b's block %d spliced in: read gave %v, want EIO", tc.block, err)
			}
			if got, err := preadDirect(t, m.path("a"), 4096, 2*4096); err != nil || !bytes.Equal(got, a[2*4096:]) {
				t.Errorf("a's untouched block 2: %v", err)
			}
		})
	}
}

// Stored sizes that no honest file has: up to a header is empty; a last
// block cut inside its nonce or tag is damaged and reads EIO (logged),
// while the blocks before it still read.
func TestPlainSizeOfOddBackingSizes(t *testing.T) {
	m := newTestMount(t)
	content := pattern(3, 4096+100)
	names := []string{"h0", "h1", "h17", "h18", "t1", "t28", "n1", "n28"}
	for _, name := range names {
		if err := os.WriteFile(m.path(name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cut := map[string]int64{
		"h0": 0, "h1": 1, "h17": 17, "h18": crypto.FileHeaderSize,
		"t1": crypto.FileHeaderSize + 1, "t28": crypto.FileHeaderSize + crypto.BlockOverhead,
		"n1": crypto.BlockOffset(1) + 1, "n28": crypto.BlockOffset(1) + crypto.BlockOverhead,
	}
	back := map[string]string{}
	for _, name := range names {
		back[name] = m.backingOf(name)
	}
	m.offline(func() {
		for _, name := range names {
			if err := os.Truncate(back[name], cut[name]); err != nil {
				t.Fatal(err)
			}
		}
	})
	for _, name := range []string{"h0", "h1", "h17", "h18"} {
		fi, err := os.Stat(m.path(name))
		if err != nil || fi.Size() != 0 {
			t.Errorf("%s: stat %v, size %d; want an empty file", name, err, fi.Size())
		}
		if got, err := os.ReadFile(m.path(name)); err != nil || len(got) != 0 {
			t.Errorf("%s: read %d bytes, %v; want 0", name, len(got), err)
		}
	}
	for _, name := range []string{"t1", "t28"} {
		if _, err := os.ReadFile(m.path(name)); !isErrno(err, syscall.EIO) {
			t.Errorf("%s: read gave %v, want EIO", name, err)
		}
		// Writing must not adopt the ID of a file without blocks either.
		f, err := os.OpenFile(m.path(name), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("x"), 0); !isErrno(err, syscall.EIO) {
			t.Errorf("%s: write into a file without blocks gave %v, want EIO", name, err)
		}
		f.Close()
	}
	for _, name := range []string{"n1", "n28"} {
		if _, err := os.ReadFile(m.path(name)); !isErrno(err, syscall.EIO) {
			t.Errorf("%s: read gave %v, want EIO", name, err)
		}
		if got, err := preadDirect(t, m.path(name), 4096, 0); err != nil || !bytes.Equal(got, content[:4096]) {
			t.Errorf("%s: intact block 0: %v", name, err)
		}
	}
	if len(m.loggedContaining("cut inside")) == 0 {
		t.Errorf("truncated tails not logged; got %v", m.logs.AllEntries())
	}
	// O_TRUNC (or truncate to 0) still recovers a damaged file.
	for _, name := range []string{"t1", "n1"} {
		if err := os.WriteFile(m.path(name), []byte("fresh"), 0o644); err != nil {
			t.Errorf("%s: rewrite: %v", name, err)
		}
		checkContent(t, m.path(name), []byte("fresh"))
	}
}

func writeAt(t *testing.T, p string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// readN returns the first n bytes of the (backing) file p.
func readN(t *testing.T, p string, n int64) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < n {
		t.Fatalf("%s: %d bytes, want at least %d", p, len(b), n)
	}
	return b[:n]
}

// An xattr value is bound to the file ID (docs/FORMAT.md): it must follow
// the file through every change of ID, the first header and the fresh
// one after the file was emptied, across remounts.
func TestXattrFollowsFileID(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	check := func(step string) {
		t.Helper()
		m.remount()
		buf := make([]byte, 16)
		n, err := unix.Getxattr(p, "user.k", buf)
		if err != nil || string(buf[:n]) != "v" {
			t.Errorf("after %s: getxattr %q, %v", step, buf[:max(n, 0)], err)
		}
	}
	writeAt(t, p, []byte("first"), 0)
	check("first write at 0")
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	check("truncate to 0")
	writeAt(t, p, []byte("x"), 5000)
	check("first write past the end")
	if err := os.WriteFile(p, []byte("again"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("O_TRUNC and write")
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 10000); err != nil {
		t.Fatal(err)
	}
	check("truncate up from empty")
}
