package cryptfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// longTargetFiles lists the files that hold long symlink targets.
func (m *testMount) longTargetFiles() []string {
	m.t.Helper()
	ents, err := os.ReadDir(m.backing)
	if err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), crypto.LongTargetPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestSymlinkTargetLengths stores targets up to PATH_MAX-1 bytes, as ext4
// does, and checks what lstat and readlink say before and after a remount.
func TestSymlinkTargetLengths(t *testing.T) {
	m := newTestMount(t)
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	lengths := []int{1, 3040, 3041, 4000, 4095}
	for _, n := range lengths {
		target := strings.Repeat("x/", n/2) + strings.Repeat("y", n%2)
		link := m.path("d", "l"+strings.Repeat("n", 1)+string(rune('a'+n%26)))
		if err := os.Symlink(target, link); err != nil {
			t.Fatalf("symlink with a %d-byte target: %v", n, err)
		}
		check := func(when string) {
			got, err := os.Readlink(link)
			if err != nil || got != target {
				t.Fatalf("%s: readlink of a %d-byte target: %d bytes, %v", when, n, len(got), err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(link, &st); err != nil || st.Size != int64(n) {
				t.Fatalf("%s: lstat size %d, want %d (%v)", when, st.Size, n, err)
			}
		}
		check("new")
		m.remount()
		check("after remount")
	}
	if err := os.Symlink(strings.Repeat("z", 4096), m.path("toolong")); !isErrno(err, unix.ENAMETOOLONG) {
		t.Fatalf("4096-byte target: %v, want ENAMETOOLONG", err)
	}
	if got := len(m.longTargetFiles()); got != 3 {
		t.Fatalf("%d long-target files, want 3 (3041, 4000 and 4095 bytes)", got)
	}
}

// TestLongSymlinkLifecycle: a long target's file follows its symlink
// through renames and hard links and goes with its last link.
func TestLongSymlinkLifecycle(t *testing.T) {
	m := newTestMount(t)
	target := strings.Repeat("t", 4095)
	if err := os.Mkdir(m.path("a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, m.path("a", "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("a", "l"), m.path("l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Linkat(unix.AT_FDCWD, m.path("l"), unix.AT_FDCWD, m.path("a", "l2"), 0); err != nil {
		t.Fatal(err)
	}
	m.remount()
	if got, err := os.Readlink(m.path("a", "l2")); err != nil || got != target {
		t.Fatalf("readlink through a hard link: %d bytes, %v", len(got), err)
	}
	if err := os.Remove(m.path("l")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(m.path("a", "l2")); err != nil || got != target {
		t.Fatalf("the other hard link lost its target: %d bytes, %v", len(got), err)
	}
	// Renaming a file over the last link frees the target's file too.
	if err := os.WriteFile(m.path("f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("f"), m.path("a", "l2")); err != nil {
		t.Fatal(err)
	}
	if left := m.longTargetFiles(); len(left) != 0 {
		t.Fatalf("long-target files left after the last link went: %v", left)
	}
	if err := os.Symlink(target, m.path("again")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("again")); err != nil {
		t.Fatal(err)
	}
	if left := m.longTargetFiles(); len(left) != 0 {
		t.Fatalf("long-target files left after unlink: %v", left)
	}
}

// TestLongSymlinkTamper: a long target's file swapped for another's, or
// changed, reads as EIO.
func TestLongSymlinkTamper(t *testing.T) {
	m := newTestMount(t)
	for _, n := range []string{"a", "b"} {
		if err := os.Symlink(strings.Repeat(n, 4000), m.path(n)); err != nil {
			t.Fatal(err)
		}
	}
	files := m.longTargetFiles()
	if len(files) != 2 {
		t.Fatalf("long-target files: %v", files)
	}
	m.unmount()
	a := filepath.Join(m.backing, files[0])
	b := filepath.Join(m.backing, files[1])
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	os.Chmod(a, 0o600)
	os.Chmod(b, 0o600)
	os.WriteFile(a, bb, 0o400)
	os.WriteFile(b, ab, 0o400)
	m.mount()
	for _, n := range []string{"a", "b"} {
		if got, err := os.Readlink(m.path(n)); !isErrno(err, unix.EIO) {
			t.Errorf("readlink %s after swapping target files: %d bytes, %v; want EIO", n, len(got), err)
		}
	}
	if len(m.loggedContaining("symlink target")) == 0 {
		t.Error("no tamper report logged")
	}
}
