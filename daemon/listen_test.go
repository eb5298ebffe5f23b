package daemon

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/securevol/securevol/internal/testenv"
)

// A socket appears only with its final mode and owner, even under umask 0:
// a client that connects the moment it appears (the engine, or an
// unprivileged user during a window with the umask's mode) finds it as
// documented. A watcher polls the path while the socket is made, many
// times over.
func TestSocketAppearsWithItsMode(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "not root (the socket is chowned to root)")
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for i := range 300 {
		path := filepath.Join(dir, "s.sock")
		var stop, bad atomic.Bool
		var badMode atomic.Uint32
		done := make(chan struct{})
		go func() {
			defer close(done)
			for !stop.Load() {
				if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm() != 0o600 {
					bad.Store(true)
					badMode.Store(uint32(fi.Mode().Perm()))
				}
			}
		}()
		l, err := listenUnix(path, 0o600)
		stop.Store(true)
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if bad.Load() {
			t.Fatalf("round %d: the socket was visible with mode %v", i, os.FileMode(badMode.Load()))
		}
		l.Close()
		os.Remove(path)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
