package backing

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUsage: files and symlinks count their sizes, directories DirUsage,
// hard links once; links are not followed, and the walk stops at its
// limit.
func TestUsage(t *testing.T) {
	d, root := openTestRoot(t)
	outside := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(outside, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "a", "b"), 0o700)
	os.WriteFile(filepath.Join(root, "top"), make([]byte, 100), 0o600)
	os.WriteFile(filepath.Join(root, "a", "b", "deep"), make([]byte, 23), 0o600)
	os.Link(filepath.Join(root, "a", "b", "deep"), filepath.Join(root, "a", "deeplink"))
	os.Symlink(outside, filepath.Join(root, "link")) // not followed
	os.Symlink(filepath.Dir(outside), filepath.Join(root, "a", "dirlink"))
	unix.Mkfifo(filepath.Join(root, "fifo"), 0o600)
	want := int64(100+23+len(outside)+len(filepath.Dir(outside))) + 3*DirUsage
	size, complete, err := Usage(d, 100)
	if err != nil || !complete || size != want {
		t.Fatalf("Usage: %d bytes, complete %v, %v; want %d, true", size, complete, err, want)
	}
	if _, complete, err := Usage(d, 2); err != nil || complete {
		t.Fatalf("Usage over the limit: complete %v, %v; want false", complete, err)
	}
}

// TestUsageDeepChain: a chain of directories deeper than the descriptors
// the process may open is walked whole.
func TestUsageDeepChain(t *testing.T) {
	d, root := openTestRoot(t)
	const depth = 300
	p := root
	for i := 0; i < depth; i++ {
		p = filepath.Join(p, "d")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(p, "f"), make([]byte, 7), 0o600); err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	size, complete, err := Usage(d, 1000)
	unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	if want := int64(depth+1)*DirUsage + 7; err != nil || !complete || size != want {
		t.Fatalf("Usage of a %d-deep chain with 64 descriptors: %d, complete %v, %v; want %d", depth, size, complete, err, want)
	}
}
