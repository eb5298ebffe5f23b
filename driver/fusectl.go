package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/mountinfo"
)

// The kernel's FUSE control file system (fusectl) has a folder per FUSE
// connection, named by the connection's device number: "waiting" counts
// the requests sent to the server and not yet answered, and writing to
// "abort" ends the connection, failing those requests (ECONNABORTED) and
// every later one.
const (
	fusectlDir   = "/sys/fs/fuse/connections"
	fusectlMagic = 0x65735543 // FUSECTL_SUPER_MAGIC
)

// fuseConn names the FUSE connection mounted at mp, read from mountinfo
// (a stat would ask the server), or "" if mp holds no FUSE mount.
func fuseConn(mp string) string {
	m, err := mountinfo.At(mp)
	if err != nil || m == nil || (m.FSType != "fuse" && !strings.HasPrefix(m.FSType, "fuse.")) {
		return ""
	}
	// The kernel's dev_t: 12 bits of major above 20 of minor.
	return strconv.FormatUint(uint64(m.Major)<<20|uint64(m.Minor), 10)
}

// fuseConnDir is the control folder of connection conn, mounting fusectl
// first if it is not mounted.
func (d *Driver) fuseConnDir(conn string) (string, error) {
	d.fusectlMu.Lock()
	defer d.fusectlMu.Unlock()
	var st unix.Statfs_t
	if err := unix.Statfs(fusectlDir, &st); err != nil {
		return "", fmt.Errorf("%s: %w", fusectlDir, err)
	}
	if st.Type != fusectlMagic {
		if err := unix.Mount("fusectl", fusectlDir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", fmt.Errorf("mount fusectl at %s: %w", fusectlDir, err)
		}
	}
	return filepath.Join(fusectlDir, conn), nil
}

// connWaiting is the number of requests the connection's server has not
// answered.
func connWaiting(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "waiting"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// abortConn ends the connection. A connection already gone is no error.
func abortConn(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "abort"), os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("1"))
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}
