package crypto

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// HeaderName is the file at the top of every backing folder that makes it
// self-describing: format, directory ID, KDF parameters and the wrapped key.
const HeaderName = "securevol.conf"

// FormatVersion is the on-disk format described in docs/FORMAT.md.
const FormatVersion = 1

// Cipher names recorded in the header.
const (
	ContentCipherName = "AES-256-GCM/4096"
	NameCipherName    = "EME-AES-256/base64url"
)

// ErrWrongKey means the master key does not unwrap this directory's key.
var ErrWrongKey = errors.New("wrong key: the master key does not open this directory")

// ErrNoHeader means the folder is not (or no longer) a securevol directory.
var ErrNoHeader = errors.New("not a securevol directory (no " + HeaderName + ")")

// Header is the JSON document stored in HeaderName.
type Header struct {
	Format     int        `json:"format"`
	ID         string     `json:"id"` // 32 hex digits
	Created    time.Time  `json:"created"`
	Content    string     `json:"content"`
	Names      string     `json:"names"`
	KDF        *KDFParams `json:"kdf,omitempty"`
	WrappedKey []byte     `json:"wrapped_key"` // nonce(12) || AES-256-GCM(volume key) || tag(16)
	// Labels are free-form, non-secret facts (e.g. the volume's name),
	// used to rebuild the metadata database from the folders alone.
	Labels map[string]string `json:"labels,omitempty"`
}

func wrapAD(id string) []byte { return []byte("securevol v1 volume key " + id) }

func wrapKEK(mk *MasterKey) []byte { return hkdfKey(mk.b[:], nil, labelWrap) }

func (h *Header) wrap(mk *MasterKey, volumeKey []byte) error {
	nonce := make([]byte, NonceSize)
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	h.wrapNonce(mk, volumeKey, nonce)
	return nil
}

// wrapNonce seals volumeKey with a given nonce (for known-answer tests).
func (h *Header) wrapNonce(mk *MasterKey, volumeKey, nonce []byte) {
	kek := wrapKEK(mk)
	defer clear(kek)
	g := newGCM(kek)
	h.WrappedKey = g.Seal(append([]byte(nil), nonce...), nonce, volumeKey, wrapAD(h.ID))
}

func (h *Header) unwrap(mk *MasterKey) ([]byte, error) {
	kek := wrapKEK(mk)
	defer clear(kek)
	g := newGCM(kek)
	if len(h.WrappedKey) != g.NonceSize()+KeySize+g.Overhead() {
		return nil, fmt.Errorf("header: wrapped key is %d bytes, want %d", len(h.WrappedKey), g.NonceSize()+KeySize+g.Overhead())
	}
	n := g.NonceSize()
	vk, err := g.Open(nil, h.WrappedKey[:n], h.WrappedKey[n:], wrapAD(h.ID))
	if err != nil {
		return nil, ErrWrongKey
	}
	return vk, nil
}

func (h *Header) validate() error {
	if h.Format != FormatVersion {
		return fmt.Errorf("header: format %d is not supported by this securevol (supports %d)", h.Format, FormatVersion)
	}
	if b, err := hex.DecodeString(h.ID); err != nil || len(b) != 16 {
		return fmt.Errorf("header: malformed directory ID %q", h.ID)
	}
	if h.Content != ContentCipherName || h.Names != NameCipherName {
		return fmt.Errorf("header: unsupported ciphers %q / %q", h.Content, h.Names)
	}
	if h.KDF != nil {
		if err := h.KDF.validate(); err != nil {
			return fmt.Errorf("header: %w", err)
		}
	}
	return nil
}

// ReadHeader reads and validates dir's header. It needs no key.
func ReadHeader(dir string) (*Header, error) {
	b, err := os.ReadFile(filepath.Join(dir, HeaderName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoHeader)
	}
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	var h Header
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("header %s: malformed JSON: %w", filepath.Join(dir, HeaderName), err)
	}
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &h, nil
}

// WriteHeader stores h atomically: temp file, fsync, rename, fsync dir.
func WriteHeader(dir string, h *Header) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, HeaderName), append(b, '\n'), 0o400)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmpName)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// KeySource yields the master key for a directory. KDF parameters are read
// from each directory's header, so a passphrase source can open directories
// created with different salts.
type KeySource interface {
	// MasterKey returns the master key for a header whose KDF field is kdf
	// (nil for directories created with a raw key).
	MasterKey(kdf *KDFParams) (*MasterKey, error)
	// NewKDF is what to record in a new header (nil for raw keys).
	NewKDF() *KDFParams
}

// StaticKey is a KeySource holding one raw master key (a key file).
type StaticKey struct{ Key *MasterKey }

func (s StaticKey) MasterKey(kdf *KDFParams) (*MasterKey, error) {
	if kdf != nil {
		return nil, errors.New("this directory was created with a passphrase: open it with --passphrase-file")
	}
	return s.Key, nil
}
func (s StaticKey) NewKDF() *KDFParams { return nil }

// Passphrase is a KeySource that stretches a passphrase with Argon2id. The
// result for each salt is cached, so opening many directories that share the
// daemon's salt costs one derivation.
type Passphrase struct {
	pass   []byte
	params *KDFParams
	cache  *kdfCache
}

// NewPassphrase makes a passphrase source. params is recorded in new
// directories; nil means DefaultKDFParams.
func NewPassphrase(pass []byte, params *KDFParams) (*Passphrase, error) {
	if params == nil {
		var err error
		if params, err = DefaultKDFParams(); err != nil {
			return nil, err
		}
	}
	if err := params.validate(); err != nil {
		return nil, err
	}
	return &Passphrase{pass: append([]byte(nil), pass...), params: params, cache: newKDFCache()}, nil
}

func (p *Passphrase) NewKDF() *KDFParams { return p.params }

func (p *Passphrase) MasterKey(kdf *KDFParams) (*MasterKey, error) {
	if kdf == nil {
		return nil, errors.New("this directory was created with a key file: open it with --key-file")
	}
	return p.cache.get(kdf, func() (*MasterKey, error) { return DeriveMasterKey(p.pass, kdf) })
}

// InitDir makes dir (which must exist and be empty) an encrypted directory
// under the master key from ks and returns its keys.
func InitDir(dir string, ks KeySource, labels map[string]string) (*VolumeKeys, *Header, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if len(ents) != 0 {
		return nil, nil, fmt.Errorf("init %s: directory is not empty", dir)
	}
	id := make([]byte, 16)
	vk := make([]byte, KeySize)
	defer clear(vk)
	if _, err := io.ReadFull(rand.Reader, id); err != nil {
		return nil, nil, err
	}
	if _, err := io.ReadFull(rand.Reader, vk); err != nil {
		return nil, nil, err
	}
	h := &Header{
		Format: FormatVersion, ID: hex.EncodeToString(id), Created: time.Now().UTC().Truncate(time.Second),
		Content: ContentCipherName, Names: NameCipherName, KDF: ks.NewKDF(), Labels: labels,
	}
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, nil, err
	}
	if err := h.wrap(mk, vk); err != nil {
		return nil, nil, err
	}
	keys := newVolumeKeys(vk)
	// The root directory needs its name IV before the header announces a
	// usable directory.
	if err := CreateDirIV(dir); err != nil {
		return nil, nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if err := WriteHeader(dir, h); err != nil {
		return nil, nil, fmt.Errorf("init %s: %w", dir, err)
	}
	return keys, h, nil
}

// OpenDir unwraps dir's key. A wrong master key yields ErrWrongKey.
func OpenDir(dir string, ks KeySource) (*VolumeKeys, *Header, error) {
	h, err := ReadHeader(dir)
	if err != nil {
		return nil, nil, err
	}
	keys, err := h.Open(ks)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return keys, h, nil
}

// Open unwraps the header's volume key with the key from ks.
func (h *Header) Open(ks KeySource) (*VolumeKeys, error) {
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, err
	}
	vk, err := h.unwrap(mk)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	return newVolumeKeys(vk), nil
}

// Rewrap re-wraps dir's volume key from oldKS to newKS in one atomic
// rename. The data is not re-encrypted. Rewrapping a directory that the new
// key already opens is a no-op, so an interrupted rotation can be resumed.
func Rewrap(dir string, oldKS, newKS KeySource) error {
	h, err := ReadHeader(dir)
	if err != nil {
		return err
	}
	if newMK, err := newKS.MasterKey(h.KDF); err == nil {
		if vk, err := h.unwrap(newMK); err == nil {
			clear(vk)
			return nil // already rotated
		}
	}
	oldMK, err := oldKS.MasterKey(h.KDF)
	if err != nil {
		return fmt.Errorf("rewrap %s: %w", dir, err)
	}
	vk, err := h.unwrap(oldMK)
	if err != nil {
		return fmt.Errorf("rewrap %s: old key: %w", dir, err)
	}
	defer clear(vk)
	h.KDF = newKS.NewKDF()
	newMK, err := newKS.MasterKey(h.KDF)
	if err != nil {
		return fmt.Errorf("rewrap %s: %w", dir, err)
	}
	if err := h.wrap(newMK, vk); err != nil {
		return err
	}
	if err := WriteHeader(dir, h); err != nil {
		return fmt.Errorf("rewrap %s: %w", dir, err)
	}
	return nil
}

// DestroyKey crypto-shreds dir: the header (and with it the only copy of
// the wrapped volume key) is overwritten with zeros, synced and removed.
// From then on the directory's contents cannot be decrypted, even if
// deleting the files afterwards is slow or interrupted.
func DestroyKey(dir string) error {
	path := filepath.Join(dir, HeaderName)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// The header is 0400; root opens it regardless, others chmod first.
		if err2 := os.Chmod(path, 0o600); err2 == nil {
			f, err = os.OpenFile(path, os.O_WRONLY, 0)
		}
		if err != nil {
			return fmt.Errorf("destroy key in %s: %w", dir, err)
		}
	}
	st, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, st.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("destroy key in %s: %w", dir, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("destroy key in %s: %w", dir, err)
	}
	return syncDir(dir)
}
