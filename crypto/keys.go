package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/rfjakob/eme"
	"golang.org/x/crypto/hkdf"
)

// HKDF labels. Changing any of them changes the on-disk format.
const (
	labelWrap    = "securevol v1 wrap"
	labelContent = "securevol v1 content"
	labelFile    = "securevol v1 file"
	labelNames   = "securevol v1 names"
	labelXattr   = "securevol v1 xattr"
	labelMeta    = "securevol v1 meta"
	labelHeader  = "securevol v2 header"
)

// hkdfKey derives a KeySize key from secret with HKDF-SHA256.
func hkdfKey(secret, salt []byte, label string) []byte {
	out := make([]byte, KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, salt, []byte(label)), out); err != nil {
		panic("hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return out
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("aes: " + err.Error()) // key size is fixed
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic("gcm: " + err.Error())
	}
	return g
}

// VolumeKeys are the unwrapped keys of one encrypted directory. They are
// safe for concurrent use.
type VolumeKeys struct {
	content [KeySize]byte
	names   *eme.EMECipher
	xnames  *eme.EMECipher // xattr names: EME with a fixed tweak
	meta    cipher.AEAD    // symlink targets and xattr values
	// v1Xattrs: the volume was written by format 1, whose xattr values are
	// bound to their attribute name only; OpenXattrValue accepts those.
	v1Xattrs bool
}

func newVolumeKeys(volumeKey []byte) *VolumeKeys {
	v := &VolumeKeys{}
	ck := hkdfKey(volumeKey, nil, labelContent)
	copy(v.content[:], ck)
	clear(ck)
	nk := hkdfKey(volumeKey, nil, labelNames)
	nb, _ := aes.NewCipher(nk)
	clear(nk)
	v.names = eme.New(nb)
	xk := hkdfKey(volumeKey, nil, labelXattr)
	xb, _ := aes.NewCipher(xk)
	clear(xk)
	v.xnames = eme.New(xb)
	mk := hkdfKey(volumeKey, nil, labelMeta)
	v.meta = newGCM(mk)
	clear(mk)
	return v
}

// String keeps keys out of logs.
func (v *VolumeKeys) String() string { return "VolumeKeys(redacted)" }

// FileCipher returns the cipher for the file whose header carries fileID.
// Each file has its own AES-256-GCM key, HKDF(content key, salt=fileID), so
// the random-nonce collision bound applies per file, not per volume.
func (v *VolumeKeys) FileCipher(fileID []byte) (*FileCipher, error) {
	if len(fileID) != FileIDSize {
		return nil, fmt.Errorf("file ID is %d bytes, want %d", len(fileID), FileIDSize)
	}
	k := hkdfKey(v.content[:], fileID, labelFile)
	fc := &FileCipher{aead: newGCM(k)}
	clear(k)
	copy(fc.id[:], fileID)
	return fc, nil
}
