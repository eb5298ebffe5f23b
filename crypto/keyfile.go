package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// GenerateKeyFile writes a new random master key to path with mode 0600.
// It refuses to overwrite an existing file.
func GenerateKeyFile(path string) error {
	k, err := RandomMasterKey()
	if err != nil {
		return err
	}
	defer k.Wipe()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.Write(k.b[:]); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync key file %s: %w", path, err)
	}
	return f.Close()
}

// ErrKeyFilePerms is returned when a key or passphrase file can be read by
// group or others.
var ErrKeyFilePerms = errors.New("readable by group or others")

func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: %w; run: chmod 600 %s",
			path, st.Mode().Perm(), ErrKeyFilePerms, path)
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// LoadKeyFile reads a master key written by GenerateKeyFile. The file must
// hold exactly KeySize bytes and must not be group or world readable.
func LoadKeyFile(path string) (*MasterKey, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer clear(b)
	if len(b) != KeySize {
		return nil, fmt.Errorf("key file %s holds %d bytes, want %d (create one with: securevol key generate FILE)", path, len(b), KeySize)
	}
	return NewMasterKey(b)
}

// ReadPassphraseFile reads a passphrase (one trailing newline is dropped).
// Like key files, passphrase files must not be group or world readable.
func ReadPassphraseFile(path string) ([]byte, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", path)
	}
	return b, nil
}
