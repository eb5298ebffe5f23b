// Package keyfile reads and writes the files that hold a master key or a
// passphrase. Such a file is a path the administrator chose (a symlink to
// it is fine), but it must be a regular file that belongs to the user the
// process runs as (or root) and that no one else may read or write:
// anyone who can replace or read it holds every volume.
//
// Errors are *Error values wrapping one of the sentinels below; they say
// what is wrong, and the command line says how to fix it.
package keyfile

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// Sentinels wrapped by every error of this package.
var (
	// ErrPerms: group or others have some access to the file.
	ErrPerms = errors.New("accessible by group or others")
	// ErrOwner: the file belongs to a user other than root or the user
	// this process runs as, who could replace the key.
	ErrOwner = errors.New("owned by another user")
	// ErrNotRegular: the path names a directory, FIFO, device or socket.
	ErrNotRegular = errors.New("not a regular file")
	// ErrKeySize: a key file does not hold exactly crypto.KeySize bytes.
	ErrKeySize = fmt.Errorf("not a %d-byte master key", crypto.KeySize)
	// ErrEmpty: a passphrase file holds no passphrase.
	ErrEmpty = errors.New("empty")
)

// Error is a failure with one key or passphrase file.
type Error struct {
	Path string
	Err  error  // a sentinel above, or an error from the system
	What string // detail: the mode, owner or size found
}

func (e *Error) Error() string {
	if e.What != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Path, e.Err, e.What)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// maxSecretFile bounds what is read: a key is 32 bytes, a passphrase a
// line.
const maxSecretFile = 64 << 10

// readSecretFile checks path (see the package comment) and reads it. The
// file is first opened O_PATH, which opens nothing (no device driver runs,
// no FIFO waits), and checked with fstat; it is then read through that
// very descriptor, so what was checked is what is read.
func readSecretFile(path string) ([]byte, error) {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Path: path, Err: &os.PathError{Op: "open", Path: path, Err: err}}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, &Error{Path: path, Err: err}
	}
	if err := check(&st); err != nil {
		err.Path = path
		return nil, err
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile))
	if err != nil {
		return nil, &Error{Path: path, Err: err}
	}
	return b, nil
}

// check applies the type, owner and mode rules to a file's stat.
func check(st *unix.Stat_t) *Error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &Error{Err: ErrNotRegular}
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return &Error{Err: ErrOwner, What: fmt.Sprintf("owner uid %d; want root or uid %d", st.Uid, os.Geteuid())}
	case st.Mode&0o077 != 0:
		return &Error{Err: ErrPerms, What: fmt.Sprintf("mode %04o", st.Mode&0o7777)}
	}
	return nil
}

// LoadKeyFile reads a master key written by GenerateKeyFile: exactly
// crypto.KeySize bytes.
func LoadKeyFile(path string) (*crypto.MasterKey, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	if len(b) != crypto.KeySize {
		return nil, &Error{Path: path, Err: ErrKeySize, What: fmt.Sprintf("%d bytes", len(b))}
	}
	return crypto.NewMasterKey(b)
}

// ReadPassphraseFile reads a passphrase (one trailing newline is dropped).
func ReadPassphraseFile(path string) ([]byte, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, &Error{Path: path, Err: ErrEmpty}
	}
	return b, nil
}

// ReadSecretFile reads another kind of secret file (an age identity file)
// with the same checks as a key or passphrase file.
func ReadSecretFile(path string) ([]byte, error) { return readSecretFile(path) }

// GenerateKeyFile writes a new random master key to path with mode 0600
// and makes it durable (file and directory synced). It never overwrites
// an existing file.
func GenerateKeyFile(path string) error {
	raw := make([]byte, crypto.KeySize)
	defer clear(raw)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return &Error{Path: path, Err: err}
	}
	err = writeSynced(f, raw)
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return &Error{Path: path, Err: err}
	}
	return nil
}

// WriteKeyFile stores the raw key at path with mode 0600, replacing what
// is there atomically: a temporary file beside it is written, fsynced and
// renamed over it, and the directory is fsynced.
func WriteKeyFile(path string, raw []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".securevol-key-")
	if err != nil {
		return &Error{Path: path, Err: err}
	}
	tmp := f.Name() // mode 0600 from the start
	err = writeSynced(f, raw)
	if err == nil {
		err = Install(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return &Error{Path: path, Err: err}
	}
	return nil
}

// Install renames the key file from over to, durably (the directory is
// fsynced).
func Install(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Dir(to))
}

// writeSynced writes raw to the new file f, fsyncs and closes it.
func writeSynced(f *os.File, raw []byte) error {
	_, err := f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
