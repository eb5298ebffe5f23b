package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// nodeLockName is the file in the state dir that the daemon of a cluster
// node holds locked while it runs; it holds the node's instance ID.
const nodeLockName = "cluster-node"

// lockNode locks the state dir for this daemon in cluster mode (bbolt's
// lock does it on a single host) and answers its instance ID, made on
// first use. The lock is what lets a restarted node revoke the lease it
// held before (cluster.Config.Instance): the process that held it is gone,
// not merely stopped, since a stopped one keeps its lock.
func lockNode(stateDir string) (instance string, unlock func(), err error) {
	path := filepath.Join(stateDir, nodeLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("state dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return "", nil, fmt.Errorf("state dir %s: %w (%s is locked)", stateDir, ErrRunning, path)
		}
		return "", nil, fmt.Errorf("locking %s: %w", path, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 100))
	if err == nil && len(b) == 0 {
		b = make([]byte, 16)
		if _, err = rand.Read(b); err == nil {
			b = []byte(hex.EncodeToString(b))
			_, err = f.WriteAt(b, 0)
		}
		if err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		f.Close()
		return "", nil, fmt.Errorf("node instance ID in %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), func() { f.Close() }, nil
}
