package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// listenUnix listens on path with the given mode, owned by root. A stale
// socket left by a crash is replaced; a live one (another daemon) is not.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Made in place, the socket would show for a moment with the umask's
	// mode (0777 under umask 0: anyone could connect) and be found by a
	// client before it is ready; so it is made under a hidden name and
	// renamed into place with its mode and owner set.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the temporary socket a crash left: %w", err)
	}
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	fail := func(what string, err error) (net.Listener, error) {
		l.Close() // unlinks tmp
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail("socket mode", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmp, 0, 0); err != nil {
			return fail("socket owner", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail("socket", err)
	}
	// Close must not unlink tmp: it is gone, and the name may be another
	// start's by then. Run removes path itself.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}
