package backing

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// The header (crypto.HeaderName) at the top of a backing folder: crypto
// holds its pure encoding and keys; this file reads, writes and destroys it
// with the same care as every other access here.

// ErrNoHeader means the folder is not (or no longer) a securevol directory.
var ErrNoHeader = errors.New("not a securevol directory (no " + crypto.HeaderName + ")")

// ReadHeader reads and validates root's header. It needs no key. The
// header must be a regular file of at most crypto.MaxHeaderSize bytes; it
// is opened without following links and without blocking, so a planted
// symlink, FIFO or device is refused, never read.
func ReadHeader(root *Dir) (*crypto.Header, error) {
	b, err := root.ReadSmall(crypto.HeaderName, crypto.MaxHeaderSize)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, ErrNoHeader
	case errors.Is(err, ErrTooLarge):
		return nil, fmt.Errorf("%s: %w: more than %d bytes: %w", crypto.HeaderName, crypto.ErrHeaderTooLarge, crypto.MaxHeaderSize, err)
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", crypto.HeaderName, err)
	}
	h, err := crypto.ParseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", crypto.HeaderName, err)
	}
	return h, nil
}

// ReadHeaderAt reads the header of the backing folder at path (see
// ReadHeader); a missing folder counts as one without a header.
func ReadHeaderAt(path string) (*crypto.Header, error) {
	var h *crypto.Header
	err := WithRoot(path, func(root *Dir) (err error) {
		h, err = ReadHeader(root)
		return err
	})
	if errors.Is(err, unix.ENOENT) {
		err = ErrNoHeader
	}
	return h, err
}

// WriteHeader stores h in root atomically (temporary file, fsync, rename,
// fsync of root), mode 0400.
func WriteHeader(root *Dir, h *crypto.Header) error {
	b, err := h.Marshal()
	if err != nil {
		return err
	}
	if err := root.WriteAtomic(crypto.HeaderName, b, 0o400); err != nil {
		return fmt.Errorf("write %s: %w", crypto.HeaderName, err)
	}
	return nil
}

// InitVolume makes the empty folder root an encrypted directory for the
// volume called name, under the master key from ks.
func InitVolume(root *Dir, ks crypto.KeySource, name string, labels map[string]string) (*crypto.Header, *crypto.VolumeKeys, error) {
	empty := true
	if err := root.ReadNames(func(n string, _ uint64, _ uint8) bool {
		empty = n == "." || n == ".."
		return empty
	}); err != nil {
		return nil, nil, fmt.Errorf("init: %w", err)
	}
	if !empty {
		return nil, nil, errors.New("init: the folder is not empty")
	}
	h, keys, err := crypto.NewHeader(ks, name, labels)
	if err != nil {
		return nil, nil, fmt.Errorf("init: %w", err)
	}
	// The root directory needs its name IV before the header announces a
	// usable directory.
	if _, err := CreateDirIV(root); err != nil {
		return nil, nil, fmt.Errorf("init: %w", err)
	}
	if err := WriteHeader(root, h); err != nil {
		return nil, nil, fmt.Errorf("init: %w", err)
	}
	return h, keys, nil
}

// OpenVolume reads root's header and unwraps its keys. A master key that
// does not open it yields crypto.ErrWrongKey.
func OpenVolume(root *Dir, ks crypto.KeySource) (*crypto.Header, *crypto.VolumeKeys, error) {
	h, err := ReadHeader(root)
	if err != nil {
		return nil, nil, err
	}
	keys, err := h.Open(ks)
	if err != nil {
		return nil, nil, err
	}
	return h, keys, nil
}

// Rewrap re-wraps root's volume key from oldKS to newKS in one atomic
// rename (the data is not re-encrypted). A folder that newKS already opens
// is left alone, so an interrupted rotation can be resumed.
func Rewrap(root *Dir, oldKS, newKS crypto.KeySource) error {
	h, err := ReadHeader(root)
	if err != nil {
		return err
	}
	nh, changed, err := h.Rewrap(oldKS, newKS)
	if err != nil || !changed {
		return err
	}
	return WriteHeader(root, nh)
}

// DestroyKey crypto-shreds root: its header (the only copy of the wrapped
// volume key) is overwritten with zeros, synced and removed. From then on
// the folder's contents cannot be decrypted, even if deleting the files
// afterwards is slow or cut short (docs/FORMAT.md says what this does not
// guarantee on SSDs, copy-on-write file systems and backups).
//
// Only a regular file is ever written: whatever else sits at the header's
// name (a planted symlink to the master key, a FIFO, a device) is just
// unlinked. A missing header is not an error.
func DestroyKey(root *Dir) error {
	fd, err := root.OpenFile(crypto.HeaderName, unix.O_WRONLY, 0)
	if errors.Is(err, unix.EACCES) {
		// The header is 0400: root writes it regardless, others chmod first.
		if err = root.Chmod(crypto.HeaderName, 0o600); err == nil {
			fd, err = root.OpenFile(crypto.HeaderName, unix.O_WRONLY, 0)
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, ErrNotRegular):
		return unlinkNonHeader(root)
	case err != nil:
		return fmt.Errorf("destroy key: %w", err)
	}
	err = zeroAndSync(root.fence, fd)
	if errors.Is(err, errShared) {
		err = nil // not ours alone: just drop our name for it
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("destroy key: %w", err)
	}
	if err := root.Unlink(crypto.HeaderName); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("destroy key: %w", err)
	}
	if err := root.Sync(); err != nil {
		return fmt.Errorf("destroy key: %w", err)
	}
	return nil
}

// zeroAndSync overwrites the header file's bytes with zeros. Only the first
// MaxHeaderSize bytes can hold a header securevol wrote; a larger planted
// file is not worth the time.
//
// A header with more than one link is not ours alone (securevol writes
// headers as new files, with one link): another name for the same file,
// planted in the folder, may be the master key outside it. It is left as
// it is (errShared) and only our name is removed.
func zeroAndSync(fence *Fence, fd int) error {
	var st unix.Statx_t
	if err := Fstat(fd, &st); err != nil {
		return err
	}
	if st.Nlink != 1 {
		return errShared
	}
	n := min(st.Size, uint64(crypto.MaxHeaderSize))
	if _, err := fence.PwriteFull(fd, make([]byte, n), 0); err != nil {
		return err
	}
	return fence.Fsync(fd, false)
}

// unlinkNonHeader removes what stands at the header's name and is no
// regular file: it holds no key of ours. A directory there is left for the
// caller's recursive delete.
func unlinkNonHeader(root *Dir) error {
	err := root.Unlink(crypto.HeaderName)
	if err == nil {
		return root.Sync()
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EISDIR) {
		return nil
	}
	return fmt.Errorf("destroy key: %w", err)
}

// WithRoot opens the backing folder at path (see OpenRoot), runs fn on it
// and closes it.
func WithRoot(path string, fn func(root *Dir) error) error {
	root, err := OpenRoot(path)
	if err != nil {
		return err
	}
	defer root.Close()
	return fn(root)
}
