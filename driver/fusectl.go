package driver

import (
	"errors"
	"fmt"
	"io"
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

// fuseConn is a FUSE connection, as its control folder. The folder is
// named by the connection's device number, which the kernel hands to the
// next FUSE mount once the connection ends; the folder's inode number is
// not handed on that way, so it tells the connection from a later one of
// the same number.
type fuseConn struct {
	dir string
	ino uint64
}

// connOf returns the FUSE connection mounted at mp, read from mountinfo (a
// stat would ask the server), or nil if mp holds no FUSE mount. It is
// called right after the mount, while mp surely holds it: later, the
// device number may be another mount's.
func (d *Driver) connOf(mp string) (*fuseConn, error) {
	m, err := mountinfo.At(mp)
	if err != nil || m == nil || (m.FSType != "fuse" && !strings.HasPrefix(m.FSType, "fuse.")) {
		return nil, err
	}
	// The kernel's dev_t: 12 bits of major above 20 of minor.
	dir, err := d.fuseConnDir(strconv.FormatUint(uint64(m.Major)<<20|uint64(m.Minor), 10))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return &fuseConn{dir: dir, ino: st.Ino}, nil
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

// errConnEnded: the connection's control folder is gone, or is a later
// connection's.
var errConnEnded = fmt.Errorf("the FUSE connection has ended: %w", os.ErrNotExist)

// open opens the control file name of c, if c has not ended. The file is
// opened through the folder checked to be c's, so it is c's: if c ends
// meanwhile, the file answers nothing and aborts nothing.
func (c *fuseConn) open(name string, flags int) (*os.File, error) {
	dfd, err := unix.Open(c.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, errConnEnded
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: c.dir, Err: err}
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: c.dir, Err: err}
	}
	if st.Ino != c.ino {
		return nil, errConnEnded
	}
	fd, err := unix.Openat(dfd, name, flags|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, errConnEnded
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(c.dir, name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(c.dir, name)), nil
}

// waiting is the number of requests the connection's server has not
// answered.
func (c *fuseConn) waiting() (int, error) {
	f, err := c.open("waiting", unix.O_RDONLY)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	if len(b) == 0 { // the connection ended after the open
		return 0, errConnEnded
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// abort ends the connection. A connection already ended is no error.
func (c *fuseConn) abort() error {
	f, err := c.open("abort", unix.O_WRONLY)
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
