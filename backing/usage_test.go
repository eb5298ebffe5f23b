package backing

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUsage(t *testing.T) {
	d, root := openTestRoot(t)
	outside := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(outside, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "a", "b"), 0o700)
	os.WriteFile(filepath.Join(root, "top"), make([]byte, 100), 0o600)
	os.WriteFile(filepath.Join(root, "a", "b", "deep"), make([]byte, 23), 0o600)
	os.Symlink(outside, filepath.Join(root, "link")) // not followed
	os.Symlink(filepath.Dir(outside), filepath.Join(root, "a", "dirlink"))
	size, complete, err := Usage(d, 100)
	if err != nil || !complete || size != 123 {
		t.Fatalf("Usage: %d bytes, complete %v, %v; want 123, true (links not followed)", size, complete, err)
	}
	if _, complete, err := Usage(d, 2); err != nil || complete {
		t.Fatalf("Usage over the limit: complete %v, %v; want false", complete, err)
	}
}
