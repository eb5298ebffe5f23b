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
