package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"testing"
	"time"

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
	kvMetaNonce = ramp(0x90, 12)
)

// Format 1 vectors (a format 1 header still opens, and is upgraded).
const (
	wantWrapped = "404142434445464748494a4bc4866075b80eb6fd2e9c4c465491f58e5b8225f7f5473dae6f844b85f7170ae0415374f515c7ad19c8e4ea2baa016f7b"
	wantBlock3  = "606162636465666768696a6b88527f95c44f50b8bff65ba1396eb4d7cb149501b505d8e3503c02317b36ad83540d58edfaebca0553d55c"
	wantName    = "ugvLkp1q4J02uqpk-bsaBw"
	wantXattr   = "user.sv.AGs6W5208eGqpAt0DFTw4A"
)

func TestVectorWrappedKey(t *testing.T) {
	mk, _ := NewMasterKey(kvMaster)
	h := &Header{Format: FormatV1, ID: kvDirID}
	h.sealNonce(mk, kvVolumeKey, kvWrapNonce)
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

// The format 2 header: the wrapped key binds ID and name; the MAC covers
// every field (docs/FORMAT.md, "Header authentication").
var (
	kvName    = "vol-a"
	kvCreated = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	kvSalt    = ramp(0x80, 32)
	kvLabels  = map[string]string{"uid": "1000", "mode": "0750"}
)

const (
	wantWrappedV2 = "404142434445464748494a4bc4866075b80eb6fd2e9c4c465491f58e5b8225f7f5473dae6f844b85f7170ae05a0477eea2b2dc54b84ddfe6c12aada8"
	wantMAC       = "847890a6aaae2e947c61d813dabb498769b02fc8b395300cc942742e9c92606f"
)

func kvHeaderV2() *Header {
	return &Header{Format: 2, ID: kvDirID, Created: kvCreated, Content: ContentCipherName, Names: NameCipherName,
		KDF:  &KDFParams{Algorithm: "argon2id", Salt: kvSalt, Time: 3, MemoryKiB: 65536, Threads: 4},
		Name: kvName, Labels: kvLabels}
}

func TestVectorHeaderV2(t *testing.T) {
	mk, _ := NewMasterKey(kvMaster)
	h := kvHeaderV2()
	h.sealNonce(mk, kvVolumeKey, kvWrapNonce)
	if got := hex.EncodeToString(h.WrappedKey); got != wantWrappedV2 {
		t.Errorf("v2 wrapped key = %s, want %s", got, wantWrappedV2)
	}
	if got := hex.EncodeToString(h.MAC); got != wantMAC {
		t.Errorf("v2 MAC = %s, want %s", got, wantMAC)
	}
	// The same bytes from the documented recipe, standard library alone.
	lp := func(b []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ad := cat([]byte("securevol v2 volume key"), lp([]byte(kvDirID)), lp([]byte(kvName)))
	kek := stdHKDF(kvMaster, nil, "securevol v1 wrap")
	wrapped := stdGCM(kek).Seal(append([]byte(nil), kvWrapNonce...), kvWrapNonce, kvVolumeKey, ad)
	if !bytes.Equal(h.WrappedKey, wrapped) {
		t.Fatal("v2 wrapped key differs from the documented construction")
	}
	kdf := cat(lp([]byte("argon2id")), lp(kvSalt), lp([]byte("3")), lp([]byte("65536")), lp([]byte("4")))
	labels := cat(lp([]byte("mode")), lp([]byte("0750")), lp([]byte("uid")), lp([]byte("1000")))
	msg := cat([]byte("securevol v2 header"), lp([]byte("2")), lp([]byte(kvDirID)), lp([]byte("2024-01-02T03:04:05Z")),
		lp([]byte("AES-256-GCM/4096")), lp([]byte("EME-AES-256/base64url")), lp(kdf), lp([]byte(kvName)), lp(labels), lp([]byte("0")), lp(wrapped))
	m := hmac.New(sha256.New, stdHKDF(kvVolumeKey, nil, "securevol v2 header"))
	m.Write(msg)
	if !bytes.Equal(h.MAC, m.Sum(nil)) {
		t.Fatal("v2 MAC differs from the documented construction")
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

// An xattr value, bound to its name and entry (here a file ID).
const wantXattrValue = "909192939495969798999a9b3574f0d3bfa59028369c43e1c33b964942f5997f37867d5ad431"

func TestVectorXattrValue(t *testing.T) {
	keys := newVolumeKeys(kvVolumeKey)
	sealed := keys.sealMetaNonce([]byte("text/plain"), xattrAD("user.mime", kvFileID), kvMetaNonce)
	if got := hex.EncodeToString(sealed); got != wantXattrValue {
		t.Errorf("xattr value = %s, want %s", got, wantXattrValue)
	}
	ad := append(binary.BigEndian.AppendUint32([]byte("xattr "), 9), "user.mime"...)
	ad = append(ad, kvFileID...)
	metaKey := stdHKDF(kvVolumeKey, nil, "securevol v1 meta")
	if want := stdGCM(metaKey).Seal(append([]byte(nil), kvMetaNonce...), kvMetaNonce, []byte("text/plain"), ad); !bytes.Equal(sealed, want) {
		t.Fatal("xattr value differs from the documented construction")
	}
	if got, err := keys.OpenXattrValue("user.mime", sealed, kvFileID); err != nil || string(got) != "text/plain" {
		t.Fatalf("open: %v", err)
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
