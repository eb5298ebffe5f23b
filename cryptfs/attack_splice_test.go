package cryptfs

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/securevol/securevol/crypto"
)

// TestAttackHeaderOnlySplice: file B's backing file is replaced by file
// A's header alone (18 bytes, no blocks). A write to B through the mount
// must not adopt A's file ID, or B's blocks, copied over A's, would
// decrypt inside A; FORMAT.md says blocks cannot move between files.
func TestAttackHeaderOnlySplice(t *testing.T) {
	m := newTestMount(t)
	const size = 2 * crypto.BlockSize
	contentA, contentB := pattern(21, size), pattern(22, size)
	if err := os.WriteFile(m.path("A"), contentA, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("B"), []byte("anything"), 0o644); err != nil {
		t.Fatal(err)
	}
	backA, backB := m.backingOf("A"), m.backingOf("B")

	m.offline(func() {
		hdr, err := os.ReadFile(backA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(backB, hdr[:crypto.FileHeaderSize], 0o644); err != nil {
			t.Fatal(err)
		}
	})
	// Not O_TRUNC: the write goes into the file as it is on disk.
	if err := writeFileVia(m.path("B"), contentB); err != nil {
		t.Fatalf("write B: %v", err)
	}
	m.offline(func() {
		a, errA := os.ReadFile(backA)
		b, errB := os.ReadFile(backB)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if len(a) != len(b) {
			t.Fatalf("backing sizes differ: A %d, B %d", len(a), len(b))
		}
		// A keeps its own header and gets B's blocks.
		copy(a[crypto.FileHeaderSize:], b[crypto.FileHeaderSize:])
		if err := os.WriteFile(backA, a, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	got, err := os.ReadFile(m.path("A"))
	if bytes.Equal(got, contentB) {
		t.Fatal("A reads as B's plaintext: B's blocks decrypt inside A (B adopted A's file ID from a header-only file)")
	}
	if !isErrno(err, syscall.EIO) {
		t.Errorf("reading A after the splice: %d bytes, %v; want EIO", len(got), err)
	}
}
