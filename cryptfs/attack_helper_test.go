package cryptfs

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// Helpers of the attack suite (attack_*_test.go): whoever holds a backing
// folder plants symlinks, special files and swapped bytes in it; the worst
// allowed outcome is an error or EIO, never an effect outside the folder,
// never a hang.

// backingNameFor is the name plain gets in backing directory dir: its
// encrypted name under the directory's IV (hashed if long).
func (m *testMount) backingNameFor(dir, plain string) string {
	m.t.Helper()
	iv, err := os.ReadFile(filepath.Join(dir, crypto.DirIVName))
	if err != nil {
		m.t.Fatal(err)
	}
	enc, err := m.keys.EncryptName(plain, iv)
	if err != nil {
		m.t.Fatal(err)
	}
	b, _ := crypto.BackingName(enc)
	return b
}

// writeFileVia writes data to an existing file through an O_WRONLY open
// and closes it, returning the first error.
func writeFileVia(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// statForced stats p through the mount asking the file system itself,
// not the kernel's attribute cache.
func statForced(p string) error {
	var st unix.Statx_t
	return unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &st)
}
