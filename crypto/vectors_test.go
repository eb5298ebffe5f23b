package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"testing"

	"github.com/rfjakob/eme"
	"golang.org/x/crypto/hkdf"
)

// Known-answer vectors pin the on-disk format (docs/FORMAT.md, "Test
// vectors"). Inputs are byte ramps so the document can state them briefly.
func ramp(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

var (
	kvMaster    = ramp(0x00, 32)
	kvVolumeKey = ramp(0x20, 32)
	kvDirID     = "000102030405060708090a0b0c0d0e0f"
	kvWrapNonce = ramp(0x40, 12)
	kvFileID    = ramp(0x50, 16)
	kvBlockNon  = ramp(0x60, 12)
	kvDirIV     = ramp(0x70, 16)
	kvPlain     = []byte("securevol block test vector")
)

const (
	wantWrapped = "404142434445464748494a4bc4866075b80eb6fd2e9c4c465491f58e5b8225f7f5473dae6f844b85f7170ae0415374f515c7ad19c8e4ea2baa016f7b"
	wantBlock3  = "606162636465666768696a6b88527f95c44f50b8bff65ba1396eb4d7cb149501b505d8e3503c02317b36ad83540d58edfaebca0553d55c"
	wantName    = "ugvLkp1q4J02uqpk-bsaBw"
	wantXattr   = "user.sv.AGs6W5208eGqpAt0DFTw4A"
)

func TestVectorWrappedKey(t *testing.T) {
	mk, _ := NewMasterKey(kvMaster)
	h := &Header{ID: kvDirID}
	h.wrapNonce(mk, kvVolumeKey, kvWrapNonce)
	if got := hex.EncodeToString(h.WrappedKey); got != wantWrapped {
		t.Fatalf("wrapped key = %s, want %s", got, wantWrapped)
	}
	// The same bytes from the documented recipe, with the standard library
	// alone: KEK = HKDF-SHA256(master, salt=nil, "securevol v1 wrap").
	kek := stdHKDF(kvMaster, nil, "securevol v1 wrap")
	g := stdGCM(kek)
	want := g.Seal(append([]byte(nil), kvWrapNonce...), kvWrapNonce, kvVolumeKey, []byte("securevol v1 volume key "+kvDirID))
	if !bytes.Equal(h.WrappedKey, want) {
		t.Fatal("wrapped key differs from the documented construction")
	}
	vk, err := h.unwrap(mk)
	if err != nil || !bytes.Equal(vk, kvVolumeKey) {
		t.Fatalf("unwrap: %v", err)
	}
}

func TestVectorBlock(t *testing.T) {
	keys := newVolumeKeys(kvVolumeKey)
	fc, err := keys.FileCipher(kvFileID)
	if err != nil {
		t.Fatal(err)
	}
	sealed := fc.sealBlockNonce(nil, kvPlain, 3, kvBlockNon)
	if got := hex.EncodeToString(sealed); got != wantBlock3 {
		t.Fatalf("block = %s, want %s", got, wantBlock3)
	}
	contentKey := stdHKDF(kvVolumeKey, nil, "securevol v1 content")
	fileKey := stdHKDF(contentKey, kvFileID, "securevol v1 file")
	ad := binary.BigEndian.AppendUint64(nil, 3)
	ad = append(ad, kvFileID...)
	want := stdGCM(fileKey).Seal(append([]byte(nil), kvBlockNon...), kvBlockNon, kvPlain, ad)
	if !bytes.Equal(sealed, want) {
		t.Fatal("block differs from the documented construction")
	}
	got, err := fc.OpenBlock(nil, sealed, 3)
	if err != nil || !bytes.Equal(got, kvPlain) {
		t.Fatalf("open: %q, %v", got, err)
	}
}

func TestVectorName(t *testing.T) {
	keys := newVolumeKeys(kvVolumeKey)
	enc, err := keys.EncryptName("hello.txt", kvDirIV)
	if err != nil {
		t.Fatal(err)
	}
	if enc != wantName {
		t.Fatalf("name = %s, want %s", enc, wantName)
	}
	nb, _ := aes.NewCipher(stdHKDF(kvVolumeKey, nil, "securevol v1 names"))
	padded := append([]byte("hello.txt"), bytes.Repeat([]byte{7}, 7)...)
	if want := b64.EncodeToString(eme.Transform(nb, kvDirIV, padded, eme.DirectionEncrypt)); enc != want {
		t.Fatalf("name differs from the documented construction: %s", want)
	}
	x, err := keys.EncryptXattrName("user.test")
	if err != nil || x != wantXattr {
		t.Fatalf("xattr name = %s (%v), want %s", x, err, wantXattr)
	}
}

func stdHKDF(secret, salt []byte, info string) []byte {
	out := make([]byte, 32)
	io.ReadFull(hkdf.New(sha256.New, secret, salt, []byte(info)), out)
	return out
}

func stdGCM(key []byte) cipher.AEAD {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g
}
