package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"
)

// HeaderName is the file at the top of every backing folder that makes it
// self-describing: format, directory ID, KDF parameters and the wrapped key.
const HeaderName = "securevol.conf"

// FormatVersion is the on-disk format described in docs/FORMAT.md, the
// one new headers get. Format 1 headers still open; Upgrade turns one into
// format 2 without touching the data (both share every content, name and
// xattr key).
const (
	FormatVersion = 2
	FormatV1      = 1
)

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

// ErrHeaderTampered means the master key opens the header but its
// authenticated fields (name, labels, KDF, ID, ...) are not the ones it was
// written with.
var ErrHeaderTampered = errors.New("header tampered with: its fields do not match their authentication tag")

// ErrNotV1 is returned by Upgrade for a header that is not format 1.
var ErrNotV1 = errors.New("not a format 1 header")

// ErrNotV2 is returned by Rebind for a header that is not format 2.
var ErrNotV2 = errors.New("not a format 2 header")

// ErrMalformedHeader means a header document is not one securevol wrote.
// Its messages never quote the document's bytes: a header may be anything
// a hostile folder holds (another file's contents, through a planted link).
var ErrMalformedHeader = errors.New("malformed header")

// ErrHeaderTooLarge means a header document exceeds MaxHeaderSize.
var ErrHeaderTooLarge = errors.New("header too large")

// Header is the JSON document stored in HeaderName.
type Header struct {
	Format  int        `json:"format"`
	ID      string     `json:"id"` // 32 hex digits
	Created time.Time  `json:"created"`
	Content string     `json:"content"`
	Names   string     `json:"names"`
	KDF     *KDFParams `json:"kdf,omitempty"`
	// Name is the volume's name (format 2; empty for folders made outside
	// the daemon). It is part of the wrapped key's associated data.
	Name       string `json:"name,omitempty"`
	WrappedKey []byte `json:"wrapped_key"` // nonce(12) || AES-256-GCM(volume key) || tag(16)
	// Labels are free-form, non-secret facts (the volume's options), used
	// to rebuild the metadata database from the folders alone.
	Labels map[string]string `json:"labels,omitempty"`
	// UpgradedFrom is the format a format 2 header was upgraded from (1),
	// or 0. An upgraded volume may hold extended-attribute values sealed
	// the format 1 way (bound to the attribute name only), which it
	// therefore still accepts; see VolumeKeys.OpenXattrValue.
	UpgradedFrom int `json:"upgraded_from,omitempty"`
	// MAC authenticates every other field (format 2): HMAC-SHA256 under a
	// key derived from the volume key, so only a holder of the master key
	// can write a header that opens without ErrHeaderTampered.
	MAC []byte `json:"mac,omitempty"`
}

// VolumeName is the name of the volume the header belongs to. In format 2
// it is authenticated (by a successful Open); in format 1 it is only the
// "name" label, which anyone who can write the folder can change.
func (h *Header) VolumeName() string {
	if h.Format == FormatV1 {
		return h.Labels["name"]
	}
	return h.Name
}

// Authenticated reports whether Open verifies the header's name and labels
// (format 2) or not (format 1).
func (h *Header) Authenticated() bool { return h.Format != FormatV1 }

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
	switch {
	case h.Format == FormatV1 && (h.Name != "" || h.MAC != nil || h.UpgradedFrom != 0):
		return fmt.Errorf("%w: a format 1 header with format 2 fields", ErrMalformedHeader)
	case h.Format == FormatVersion && len(h.MAC) != sha256.Size:
		return fmt.Errorf("%w: the header's authentication tag is %d bytes, want %d", ErrMalformedHeader, len(h.MAC), sha256.Size)
	case h.Format != FormatV1 && h.Format != FormatVersion:
		return fmt.Errorf("%w: format %d is not supported by this securevol (supports %d and %d)", ErrMalformedHeader, h.Format, FormatV1, FormatVersion)
	case h.UpgradedFrom != 0 && h.UpgradedFrom != FormatV1:
		return fmt.Errorf("%w: upgraded from unknown format %d", ErrMalformedHeader, h.UpgradedFrom)
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

// wrapAD is the associated data of the wrapped volume key. Format 2
// binds the key to the folder's ID and the volume's name, so a wrapped key
// cannot be moved into another folder's header, nor a header be renamed.
func (h *Header) wrapAD() []byte {
	if h.Format == FormatV1 {
		return []byte("securevol v1 volume key " + h.ID)
	}
	ad := []byte("securevol v2 volume key")
	ad = appendLP(ad, []byte(h.ID))
	return appendLP(ad, []byte(h.Name))
}

// appendLP appends b with its length as a 4-byte big-endian prefix, so a
// sequence of fields has exactly one reading.
func appendLP(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

func wrapKEK(mk *MasterKey) []byte { return hkdfKey(mk.b[:], nil, labelWrap) }

// seal wraps volumeKey under mk and, for format 2, recomputes the MAC
// (which covers the wrapped key). Every field must be final before.
func (h *Header) seal(mk *MasterKey, volumeKey []byte) error {
	nonce := make([]byte, NonceSize)
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	h.sealNonce(mk, volumeKey, nonce)
	return nil
}

// sealNonce is seal with a given nonce (for known-answer tests).
func (h *Header) sealNonce(mk *MasterKey, volumeKey, nonce []byte) {
	kek := wrapKEK(mk)
	defer clear(kek)
	h.WrappedKey = newGCM(kek).Seal(append([]byte(nil), nonce...), nonce, volumeKey, h.wrapAD())
	h.MAC = nil
	if h.Format != FormatV1 {
		h.MAC = h.mac(volumeKey)
	}
}

func (h *Header) unwrap(mk *MasterKey) ([]byte, error) {
	if len(h.WrappedKey) != wrappedKeySize {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrMalformedHeader, len(h.WrappedKey), wrappedKeySize)
	}
	kek := wrapKEK(mk)
	defer clear(kek)
	vk, err := newGCM(kek).Open(nil, h.WrappedKey[:NonceSize], h.WrappedKey[NonceSize:], h.wrapAD())
	if err != nil {
		return nil, ErrWrongKey
	}
	return vk, nil
}

// mac is the format 2 header's authentication tag: HMAC-SHA256 keyed by
// HKDF(volume key, "securevol v2 header") over macInput.
func (h *Header) mac(volumeKey []byte) []byte {
	k := hkdfKey(volumeKey, nil, labelHeader)
	defer clear(k)
	m := hmac.New(sha256.New, k)
	m.Write(h.macInput())
	return m.Sum(nil)
}

// macInput encodes every field but the MAC itself, each length-prefixed
// (docs/FORMAT.md gives the exact layout).
func (h *Header) macInput() []byte {
	b := []byte(labelHeader)
	b = appendLP(b, []byte(strconv.Itoa(h.Format)))
	b = appendLP(b, []byte(h.ID))
	b = appendLP(b, []byte(h.Created.UTC().Format(time.RFC3339Nano)))
	b = appendLP(b, []byte(h.Content))
	b = appendLP(b, []byte(h.Names))
	var kdf []byte
	if p := h.KDF; p != nil {
		kdf = appendLP(kdf, []byte(p.Algorithm))
		kdf = appendLP(kdf, p.Salt)
		kdf = appendLP(kdf, []byte(strconv.FormatUint(uint64(p.Time), 10)))
		kdf = appendLP(kdf, []byte(strconv.FormatUint(uint64(p.MemoryKiB), 10)))
		kdf = appendLP(kdf, []byte(strconv.FormatUint(uint64(p.Threads), 10)))
	}
	b = appendLP(b, kdf)
	b = appendLP(b, []byte(h.Name))
	var labels []byte
	for _, k := range slices.Sorted(maps.Keys(h.Labels)) {
		labels = appendLP(labels, []byte(k))
		labels = appendLP(labels, []byte(h.Labels[k]))
	}
	b = appendLP(b, labels)
	b = appendLP(b, []byte(strconv.Itoa(h.UpgradedFrom)))
	return appendLP(b, h.WrappedKey)
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
	h := &Header{
		Format: FormatVersion, ID: hex.EncodeToString(id), Created: time.Now().UTC().Truncate(time.Second),
		Content: ContentCipherName, Names: NameCipherName, KDF: ks.NewKDF(), Name: name, Labels: maps.Clone(labels),
	}
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, nil, err
	}
	if err := h.seal(mk, vk); err != nil {
		return nil, nil, err
	}
	return h, newVolumeKeys(vk), nil
}

// Open unwraps the header's volume key with the key from ks and, for
// format 2, verifies every other field: ErrWrongKey if the key does not
// open it (or its ID or name were changed), ErrHeaderTampered if another
// field was.
func (h *Header) Open(ks KeySource) (*VolumeKeys, error) {
	vk, err := h.volumeKey(ks)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	keys := newVolumeKeys(vk)
	keys.v1Xattrs = h.Format == FormatV1 || h.UpgradedFrom == FormatV1
	return keys, nil
}

func (h *Header) volumeKey(ks KeySource) ([]byte, error) {
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, err
	}
	vk, err := h.unwrap(mk)
	if err != nil {
		return nil, err
	}
	if h.Format != FormatV1 && !hmac.Equal(h.mac(vk), h.MAC) {
		clear(vk)
		return nil, ErrHeaderTampered
	}
	return vk, nil
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
	c.MAC = append([]byte(nil), h.MAC...)
	c.Labels = maps.Clone(h.Labels)
	return &c
}

// Rewrap returns a copy of h whose volume key is wrapped by newKS instead
// of oldKS (the data is untouched). If newKS already opens h, it returns h
// itself and changed is false, so an interrupted rotation can be resumed.
func (h *Header) Rewrap(oldKS, newKS KeySource) (nh *Header, changed bool, err error) {
	switch vk, err := h.volumeKey(newKS); {
	case err == nil:
		clear(vk)
		return h, false, nil
	case errors.Is(err, ErrHeaderTampered):
		return nil, false, err
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
	if err := nh.seal(newMK, vk); err != nil {
		return nil, false, err
	}
	return nh, true, nil
}

// Upgrade returns the format 2 form of the format 1 header h, for the
// volume called name with labels, under the same master key and with the
// same volume key: no data changes. The name and labels must come from a
// trusted source (the daemon's database), not from h's labels, which
// anyone who can write the folder can change.
func (h *Header) Upgrade(ks KeySource, name string, labels map[string]string) (*Header, error) {
	if h.Format != FormatV1 {
		return nil, ErrNotV1
	}
	mk, err := ks.MasterKey(h.KDF)
	if err != nil {
		return nil, err
	}
	vk, err := h.unwrap(mk)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	nh := h.clone()
	nh.Format, nh.Name, nh.Labels, nh.UpgradedFrom = FormatVersion, name, maps.Clone(labels), h.Format
	if err := nh.seal(mk, vk); err != nil {
		return nil, err
	}
	return nh, nil
}

// Rebind returns the header of a new volume called name that shares h's
// volume key, and so reads h's folder's data: a copy of h (opened by
// oldKS) with a fresh directory ID and creation time, and its key wrapped
// by newKS. It is how an imported or cloned folder becomes a volume of its
// own: its ID tells it from the folder it was copied from. h must be
// format 2, whose labels (kept) are authenticated.
func (h *Header) Rebind(oldKS, newKS KeySource, name string) (*Header, error) {
	if h.Format != FormatVersion {
		return nil, ErrNotV2
	}
	vk, err := h.volumeKey(oldKS)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	id := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, id); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	nh := h.clone()
	nh.ID, nh.Created, nh.Name = hex.EncodeToString(id), time.Now().UTC().Truncate(time.Second), name
	nh.KDF = newKS.NewKDF()
	mk, err := newKS.MasterKey(nh.KDF)
	if err != nil {
		return nil, err
	}
	if err := nh.seal(mk, vk); err != nil {
		return nil, err
	}
	return nh, nil
}
