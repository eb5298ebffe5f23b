package crypto

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Names in the backing folder. Encoded names use base64url without
// padding, which has no '.', so none of these can collide with one.
const (
	DirIVName      = "sv.diriv" // 16 random bytes in every directory
	DirIVSize      = 16
	LongNamePrefix = "sv.long." // sv.long.<base64url(sha256(encoded))>
	LongNameSuffix = ".name"    // sidecar holding the full encoded name
	MaxEncodedName = 255        // longer encoded names are hashed
	XattrPrefix    = "user.sv." // backing xattr names: user.sv.<encoded>
)

// ErrBadName is returned for names that cannot be encrypted or decoded.
var ErrBadName = errors.New("invalid name")

var b64 = base64.RawURLEncoding

func pad16(b []byte) []byte {
	n := 16 - len(b)%16
	out := make([]byte, len(b)+n)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

func unpad16(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%16 != 0 {
		return nil, ErrAuth
	}
	n := int(b[len(b)-1])
	if n == 0 || n > 16 {
		return nil, ErrAuth
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, ErrAuth
		}
	}
	return b[:len(b)-n], nil
}

// EncryptName encrypts one path component for the directory whose IV is
// dirIV: EME-AES-256 with the IV as tweak over the PKCS#7-padded name,
// base64url-encoded. The result may be longer than MaxEncodedName; see
// BackingName.
func (v *VolumeKeys) EncryptName(name string, dirIV []byte) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return "", fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if len(dirIV) != DirIVSize {
		return "", fmt.Errorf("directory IV is %d bytes", len(dirIV))
	}
	c := v.names.Encrypt(dirIV, pad16([]byte(name)))
	return b64.EncodeToString(c), nil
}

// DecryptName reverses EncryptName.
func (v *VolumeKeys) DecryptName(encoded string, dirIV []byte) (string, error) {
	c, err := decodeStrict(encoded)
	if err != nil || len(c) == 0 || len(c)%16 != 0 || len(c) > 16*2048 {
		return "", fmt.Errorf("%w: %q is not an encrypted name", ErrBadName, encoded)
	}
	if len(dirIV) != DirIVSize {
		return "", fmt.Errorf("directory IV is %d bytes", len(dirIV))
	}
	p, err := unpad16(v.names.Decrypt(dirIV, c))
	if err != nil {
		return "", fmt.Errorf("name %q: %w", encoded, ErrAuth)
	}
	name := string(p)
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("name %q: %w", encoded, ErrAuth)
	}
	return name, nil
}

// BackingName maps an encoded name to the name stored on disk: itself if it
// fits, else the hashed long-name form (and then long is true and the
// encoded name must be stored in the sidecar LongNameSidecar(backing)).
func BackingName(encoded string) (backing string, long bool) {
	if len(encoded) <= MaxEncodedName {
		return encoded, false
	}
	h := sha256.Sum256([]byte(encoded))
	return LongNamePrefix + b64.EncodeToString(h[:]), true
}

// IsLongName reports whether a backing name is a hashed long name (and not
// its sidecar).
func IsLongName(backing string) bool {
	return strings.HasPrefix(backing, LongNamePrefix) && !strings.HasSuffix(backing, LongNameSuffix)
}

// LongNameSidecar is the name of the file that holds a long name's full
// encoded form.
func LongNameSidecar(backing string) string { return backing + LongNameSuffix }

// CheckLongName verifies that encoded is the name a long backing name was
// derived from (the sidecar cannot be swapped for another one).
func CheckLongName(backing, encoded string) error {
	if b, long := BackingName(encoded); !long || b != backing {
		return fmt.Errorf("long name %s: sidecar does not match: %w", backing, ErrAuth)
	}
	return nil
}

// IsInternalName reports whether a backing name is securevol bookkeeping
// rather than an encrypted entry.
func IsInternalName(backing string) bool {
	return backing == DirIVName || backing == HeaderName || strings.HasPrefix(backing, ".tmp-") ||
		strings.HasPrefix(backing, LongTargetPrefix) ||
		(strings.HasPrefix(backing, LongNamePrefix) && strings.HasSuffix(backing, LongNameSuffix))
}

// NewDirIV returns 16 random bytes.
func NewDirIV() ([]byte, error) {
	iv := make([]byte, DirIVSize)
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return iv, nil
}

var zeroIV = make([]byte, DirIVSize)

// EncryptXattrName maps a plaintext extended-attribute name to the backing
// one: XattrPrefix + base64url(EME(xattr key, zero tweak, pad(name))).
func (v *VolumeKeys) EncryptXattrName(name string) (string, error) {
	if name == "" || len(name) > 255 {
		return "", fmt.Errorf("%w: xattr %q", ErrBadName, name)
	}
	return XattrPrefix + b64.EncodeToString(v.xnames.Encrypt(zeroIV, pad16([]byte(name)))), nil
}

// DecryptXattrName reverses EncryptXattrName. ok is false for backing
// attributes that are not securevol's (they are hidden).
func (v *VolumeKeys) DecryptXattrName(backing string) (name string, ok bool) {
	if !strings.HasPrefix(backing, XattrPrefix) {
		return "", false
	}
	c, err := decodeStrict(backing[len(XattrPrefix):])
	if err != nil || len(c) == 0 || len(c)%16 != 0 {
		return "", false
	}
	p, err := unpad16(v.xnames.Decrypt(zeroIV, c))
	if err != nil {
		return "", false
	}
	return string(p), true
}

func (v *VolumeKeys) sealMeta(plain []byte, ad string) []byte {
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return v.sealMetaNonce(plain, ad, nonce)
}

// sealMetaNonce is sealMeta with a given nonce (for known-answer tests).
func (v *VolumeKeys) sealMetaNonce(plain []byte, ad string, nonce []byte) []byte {
	out := make([]byte, NonceSize, NonceSize+len(plain)+TagSize)
	copy(out, nonce)
	return v.meta.Seal(out, nonce, plain, []byte(ad))
}

func (v *VolumeKeys) openMeta(c []byte, ad string) ([]byte, error) {
	if len(c) < NonceSize+TagSize {
		return nil, ErrAuth
	}
	p, err := v.meta.Open(nil, c[:NonceSize], c[NonceSize:], []byte(ad))
	if err != nil {
		return nil, ErrAuth
	}
	return p, nil
}

// xattrAD binds an xattr value to its attribute name and to its entry:
// entryID is the directory's IV for a directory, the file ID for a regular
// file with a header, empty otherwise. A value copied onto another file or
// directory (or under another name) then fails authentication.
func xattrAD(name string, entryID []byte) string {
	ad := appendLP([]byte("xattr "), []byte(name))
	return string(append(ad, entryID...))
}

// SealXattrValue encrypts an xattr value, bound to the attribute's name and
// to its entry (see xattrAD).
func (v *VolumeKeys) SealXattrValue(name string, value, entryID []byte) []byte {
	return v.sealMeta(value, xattrAD(name, entryID))
}

// OpenXattrValue reverses SealXattrValue. On a volume written by format 1
// it also accepts a value sealed the format 1 way (bound to the name only):
// such values, until rewritten, can still be moved between entries.
func (v *VolumeKeys) OpenXattrValue(name string, sealed, entryID []byte) ([]byte, error) {
	p, err := v.openMeta(sealed, xattrAD(name, entryID))
	if err != nil && v.v1Xattrs {
		p, err = v.openMeta(sealed, "xattr "+name)
	}
	if err != nil {
		return nil, fmt.Errorf("xattr %q: %w", name, err)
	}
	return p, nil
}
