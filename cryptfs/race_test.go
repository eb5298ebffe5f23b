package cryptfs

import (
	"os"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpsDuringParentRename uses a file through its directory's
// descriptor while that directory is renamed back and forth: every
// operation names the file by node, so none may fail with ENOENT.
func TestOpsDuringParentRename(t *testing.T) {
	m := newTestMount(t)
	if err := os.MkdirAll(m.path("a/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("a/sub/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(m.path("a/sub"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		names := []string{m.path("a"), m.path("b")}
		for i := 0; !stop.Load(); i++ {
			if err := os.Rename(names[i%2], names[(i+1)%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	fails := map[string]int{}
	for i := 0; i < 20000; i++ {
		fd, err := unix.Openat(dfd, "f", unix.O_RDONLY, 0)
		if err != nil {
			fails["open: "+err.Error()]++
		} else {
			unix.Close(fd)
		}
		if err := unix.Fchmodat(dfd, "f", 0o644, 0); err != nil {
			fails["chmod: "+err.Error()]++
		}
	}
	stop.Store(true)
	<-done
	for k, v := range fails {
		t.Errorf("%s: %d times", k, v)
	}
}
