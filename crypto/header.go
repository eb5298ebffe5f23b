package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// HeaderName is the file at the top of every backing folder that makes it
// self-describing: format, directory ID, KDF parameters and the wrapped key.
const HeaderName = "securevol.conf"

// FormatVersion is the on-disk format described in docs/FORMAT.md.
const FormatVersion = 1

// MaxHeaderSize bounds a header document. Real ones are well under 1 KiB;
// the bound keeps a planted header from costing memory or time.
const MaxHeaderSize = 64 << 10

// Cipher names recorded in the header.
const (
	ContentCipherName = "AES-256-GCM/4096"
	NameCipherName    = "EME-AES-256/base64url"
)

// ErrWrongKey means the master key does not unwrap this directory's key.
var ErrWrongKey = errors.New("wrong key: the master key does not open this directory")

// ErrMalformedHeader means a header document is not one securevol wrote.
// Its messages never quote the document's bytes: a header may be anything
// a hostile folder holds (another file's contents, through a planted link).
var ErrMalformedHeader = errors.New("malformed header")

// ErrHeaderTooLarge means a header document exceeds MaxHeaderSize.
var ErrHeaderTooLarge = errors.New("header too large")

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

// ParseHeader decodes and validates a header document. It needs no key.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrHeaderTooLarge, len(b), MaxHeaderSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var h Header
	if err := dec.Decode(&h); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrMalformedHeader)
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// jsonError describes a decoding error by position only: encoding/json's
// own messages quote the input (characters, numbers, field names).
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w: JSON syntax error at byte %d", ErrMalformedHeader, se.Offset)
	case errors.As(err, &te):
		return fmt.Errorf("%w: a value of the wrong type at byte %d", ErrMalformedHeader, te.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: empty or truncated JSON", ErrMalformedHeader)
	}
	return fmt.Errorf("%w: not a securevol header document (unknown field or invalid value)", ErrMalformedHeader)
}

// Marshal encodes h as stored on disk.
func (h *Header) Marshal() ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (h *Header) validate() error {
	if h.Format != FormatVersion {
		return fmt.Errorf("%w: format %d is not supported by this securevol (supports %d)", ErrMalformedHeader, h.Format, FormatVersion)
	}
	if b, err := hex.DecodeString(h.ID); err != nil || len(b) != 16 || hex.EncodeToString(b) != h.ID {
		return fmt.Errorf("%w: the directory ID is not 32 lowercase hex digits", ErrMalformedHeader)
	}
	if h.Content != ContentCipherName || h.Names != NameCipherName {
		return fmt.Errorf("%w: unsupported ciphers (this securevol knows %s and %s)", ErrMalformedHeader, ContentCipherName, NameCipherName)
	}
	if len(h.WrappedKey) != wrappedKeySize {
		return fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrMalformedHeader, len(h.WrappedKey), wrappedKeySize)
	}
	if h.KDF != nil {
		if err := h.KDF.validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformedHeader, err)
		}
	}
	return nil
}

// wrappedKeySize is nonce || sealed volume key || tag.
const wrappedKeySize = NonceSize + KeySize + TagSize

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
	if len(h.WrappedKey) != wrappedKeySize {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrMalformedHeader, len(h.WrappedKey), wrappedKeySize)
	}
	kek := wrapKEK(mk)
	defer clear(kek)
	vk, err := newGCM(kek).Open(nil, h.WrappedKey[:NonceSize], h.WrappedKey[NonceSize:], wrapAD(h.ID))
	if err != nil {
		return nil, ErrWrongKey
	}
	return vk, nil
}

// NewHeader makes the header of a new volume called name (may be empty for
// a folder outside the daemon) with a fresh directory ID and volume key,
// wrapped under the master key from ks, and returns the volume's keys.
func NewHeader(ks KeySource, name string, labels map[string]string) (*Header, *VolumeKeys, error) {
	id := make([]byte, 16)
	vk := make([]byte, KeySize)
	defer clear(vk)
	if _, err := io.ReadFull(rand.Reader, id); err != nil {
		return nil, nil, fmt.Errorf("read random: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, vk); err != nil {
		return nil, nil, fmt.Errorf("read random: %w", err)
	}
	l := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		l[k] = v
	}
	if name != "" {
		l["name"] = name
	}
	h := &Header{
		Format: FormatVersion, ID: hex.EncodeToString(id), Created: time.Now().UTC().Truncate(time.Second),
		Content: ContentCipherName, Names: NameCipherName, KDF: ks.NewKDF(), Labels: l,
	}
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, nil, err
	}
	if err := h.wrap(mk, vk); err != nil {
		return nil, nil, err
	}
	return h, newVolumeKeys(vk), nil
}

// Open unwraps the header's volume key with the key from ks.
func (h *Header) Open(ks KeySource) (*VolumeKeys, error) {
	vk, err := h.volumeKey(ks)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	return newVolumeKeys(vk), nil
}

func (h *Header) volumeKey(ks KeySource) ([]byte, error) {
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, err
	}
	return h.unwrap(mk)
}

// clone returns a deep copy of h.
func (h *Header) clone() *Header {
	c := *h
	if h.KDF != nil {
		k := *h.KDF
		k.Salt = append([]byte(nil), h.KDF.Salt...)
		c.KDF = &k
	}
	c.WrappedKey = append([]byte(nil), h.WrappedKey...)
	if h.Labels != nil {
		c.Labels = make(map[string]string, len(h.Labels))
		for k, v := range h.Labels {
			c.Labels[k] = v
		}
	}
	return &c
}

// Rewrap returns a copy of h whose volume key is wrapped by newKS instead
// of oldKS (the data is untouched). If newKS already opens h, it returns h
// itself and changed is false, so an interrupted rotation can be resumed.
func (h *Header) Rewrap(oldKS, newKS KeySource) (nh *Header, changed bool, err error) {
	if vk, err := h.volumeKey(newKS); err == nil {
		clear(vk)
		return h, false, nil
	}
	vk, err := h.volumeKey(oldKS)
	if err != nil {
		return nil, false, fmt.Errorf("old key: %w", err)
	}
	defer clear(vk)
	nh = h.clone()
	nh.KDF = newKS.NewKDF()
	newMK, err := newKS.MasterKey(nh.KDF)
	if err != nil {
		return nil, false, err
	}
	if err := nh.wrap(newMK, vk); err != nil {
		return nil, false, err
	}
	return nh, true, nil
}
