package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testKeys(t testing.TB) *VolumeKeys {
	t.Helper()
	return newVolumeKeys(ramp(0x20, 32))
}

func TestBlockRoundTripAndTamper(t *testing.T) {
	keys := testKeys(t)
	_, id, err := NewFileHeader()
	if err != nil {
		t.Fatal(err)
	}
	fc, _ := keys.FileCipher(id)
	for _, n := range []int{1, 15, 16, 4095, 4096} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := ramp(1, n)
			sealed := fc.SealBlock(nil, plain, 7)
			if len(sealed) != n+BlockOverhead {
				t.Fatalf("sealed length %d, want %d", len(sealed), n+BlockOverhead)
			}
			if bytes.Contains(sealed, plain[:min(n, 8)]) && n >= 8 {
				t.Fatal("plaintext visible in sealed block")
			}
			got, err := fc.OpenBlock(nil, sealed, 7)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("round trip: %v", err)
			}
			// Every byte matters: nonce, body and tag.
			for _, i := range []int{0, NonceSize, len(sealed) / 2, len(sealed) - 1} {
				bad := append([]byte(nil), sealed...)
				bad[i] ^= 1
				if _, err := fc.OpenBlock(nil, bad, 7); !errors.Is(err, ErrAuth) {
					t.Fatalf("flip byte %d: err = %v, want ErrAuth", i, err)
				}
			}
			if _, err := fc.OpenBlock(nil, sealed, 8); !errors.Is(err, ErrAuth) {
				t.Fatal("block moved to another number was accepted")
			}
			_, other, _ := NewFileHeader()
			ofc, _ := keys.FileCipher(other)
			if _, err := ofc.OpenBlock(nil, sealed, 7); !errors.Is(err, ErrAuth) {
				t.Fatal("block moved to another file was accepted")
			}
			if _, err := fc.OpenBlock(nil, sealed[:len(sealed)-1], 7); !errors.Is(err, ErrAuth) {
				t.Fatal("truncated block was accepted")
			}
		})
	}
}

func TestHolesReadAsZeros(t *testing.T) {
	fc, _ := testKeys(t).FileCipher(ramp(9, 16))
	got, err := fc.OpenBlock(nil, make([]byte, CipherBlockSize), 0)
	if err != nil || len(got) != BlockSize || !isZero(got) {
		t.Fatalf("hole: len %d err %v", len(got), err)
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct{ plain, cipher uint64 }{
		{0, 0},
		{1, FileHeaderSize + 1 + BlockOverhead},
		{4095, FileHeaderSize + 4095 + BlockOverhead},
		{4096, FileHeaderSize + CipherBlockSize},
		{4097, FileHeaderSize + CipherBlockSize + 1 + BlockOverhead},
		{3*4096 + 5, FileHeaderSize + 3*CipherBlockSize + 5 + BlockOverhead},
	} {
		if got := CipherSize(tc.plain); got != tc.cipher {
			t.Errorf("CipherSize(%d) = %d, want %d", tc.plain, got, tc.cipher)
		}
		if got := PlainSize(tc.cipher); got != tc.plain {
			t.Errorf("PlainSize(%d) = %d, want %d", tc.cipher, got, tc.plain)
		}
	}
}

func TestFileHeader(t *testing.T) {
	h, id, err := NewFileHeader()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseFileHeader(h)
	if err != nil || !bytes.Equal(got, id) {
		t.Fatalf("parse: %v", err)
	}
	for _, bad := range [][]byte{h[:5], append([]byte{0, 1}, h[2:]...), make([]byte, FileHeaderSize)} {
		if _, err := ParseFileHeader(bad); !errors.Is(err, ErrAuth) {
			t.Errorf("ParseFileHeader(%x) = %v, want ErrAuth", bad, err)
		}
	}
}

func TestNames(t *testing.T) {
	keys := testKeys(t)
	iv1, iv2 := ramp(1, 16), ramp(2, 16)
	for _, name := range []string{"a", "hello.txt", strings.Repeat("x", 15), strings.Repeat("y", 16),
		strings.Repeat("z", 17), strings.Repeat("é", 127), strings.Repeat("n", 255), ".hidden", "with space"} {
		enc, err := keys.EncryptName(name, iv1)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(enc, "/.") || (len(name) >= 4 && strings.Contains(enc, name)) {
			t.Fatalf("encoded name %q unsafe", enc)
		}
		again, _ := keys.EncryptName(name, iv1)
		other, _ := keys.EncryptName(name, iv2)
		if again != enc || other == enc {
			t.Fatal("names must be deterministic per directory and differ across directories")
		}
		dec, err := keys.DecryptName(enc, iv1)
		if err != nil || dec != name {
			t.Fatalf("decrypt %q: %q, %v", name, dec, err)
		}
		backing, long := BackingName(enc)
		if len(backing) > 255 || long != (len(enc) > MaxEncodedName) || IsInternalName(backing) {
			t.Fatalf("backing name %q (long %v) for %d-byte name", backing, long, len(name))
		}
		if long && (!IsLongName(backing) || CheckLongName(backing, enc) != nil) {
			t.Fatal("long name not recognised")
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "nul\x00", strings.Repeat("n", 256)} {
		if _, err := keys.EncryptName(bad, iv1); !errors.Is(err, ErrBadName) {
			t.Errorf("EncryptName(%q) = %v, want ErrBadName", bad, err)
		}
	}
	enc, _ := keys.EncryptName("secret-name", iv1)
	if _, err := keys.DecryptName(enc, iv2); err == nil {
		t.Error("name decrypted under another directory's IV")
	}
	if _, err := keys.DecryptName("!!notbase64", iv1); !errors.Is(err, ErrBadName) {
		t.Error("garbage name accepted")
	}
}

func TestSymlinkAndXattr(t *testing.T) {
	keys := testKeys(t)
	s, blob, err := keys.SealSymlink("../target/file")
	if err != nil || blob != nil || strings.Contains(s, "target") {
		t.Fatalf("seal symlink: %q %v", s, err)
	}
	if got, err := keys.OpenSymlink(s, nil); err != nil || got != "../target/file" {
		t.Fatalf("open symlink: %q %v", got, err)
	}
	if _, err := keys.OpenSymlink(s[:len(s)-2]+"AA", nil); !errors.Is(err, ErrAuth) {
		t.Error("tampered symlink accepted")
	}
	if _, _, err := keys.SealSymlink(strings.Repeat("a", MaxSymlinkLen+1)); err == nil {
		t.Error("over-long symlink target accepted")
	}
	for _, n := range []int{maxInlineSymlink, maxInlineSymlink + 1, MaxSymlinkLen} {
		target := strings.Repeat("t", n)
		s, blob, err := keys.SealSymlink(target)
		if err != nil || len(s) > 4095 || (blob != nil) != (n > maxInlineSymlink) {
			t.Fatalf("seal a %d-byte target: stored %d bytes, blob %v, %v", n, len(s), blob != nil, err)
		}
		if got, ok := SymlinkPlainLen(uint64(len(s))); blob == nil && (!ok || got != uint64(n)) {
			t.Errorf("SymlinkPlainLen of a %d-byte target: %d %v", n, got, ok)
		}
		if blob != nil && (IsLongTarget(s) != true || LongTargetPlainLen(uint64(len(blob))) != uint64(n)) {
			t.Errorf("long target of %d bytes: reference %q, blob %d bytes", n, s, len(blob))
		}
		if got, err := keys.OpenSymlink(s, blob); err != nil || got != target {
			t.Fatalf("open a %d-byte target: %d bytes, %v", n, len(got), err)
		}
		if blob != nil {
			other := append([]byte(nil), blob...)
			other[len(other)-1] ^= 1
			if _, err := keys.OpenSymlink(s, other); !errors.Is(err, ErrAuth) {
				t.Error("a long target's file swapped for another accepted")
			}
		}
	}
	x, _ := keys.EncryptXattrName("user.mime")
	if name, ok := keys.DecryptXattrName(x); !ok || name != "user.mime" {
		t.Fatal("xattr name round trip")
	}
	if _, ok := keys.DecryptXattrName("user.other"); ok {
		t.Error("foreign xattr decoded")
	}
}

// An xattr value opens only under its own name and entry.
func TestXattrValueBinding(t *testing.T) {
	keys := testKeys(t)
	fileA, fileB := ramp(0x10, FileIDSize), ramp(0x11, FileIDSize)
	v := keys.SealXattrValue("user.mime", []byte("text/plain"), fileA)
	if got, err := keys.OpenXattrValue("user.mime", v, fileA); err != nil || string(got) != "text/plain" {
		t.Fatal("xattr value round trip")
	}
	for _, tc := range []struct {
		name  string
		attr  string
		entry []byte
	}{
		{"other name", "user.other", fileA},
		{"other file", "user.mime", fileB},
		{"no entry", "user.mime", nil},
		{"name and entry run together", "user.mim", append([]byte("e"), fileA...)},
	} {
		if _, err := keys.OpenXattrValue(tc.attr, v, tc.entry); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: value accepted (%v)", tc.name, err)
		}
	}
	// A format 1 value (bound to the name only) opens only on a volume
	// that format 1 wrote.
	legacy := keys.sealMeta([]byte("old"), "xattr user.mime")
	if _, err := keys.OpenXattrValue("user.mime", legacy, fileA); !errors.Is(err, ErrAuth) {
		t.Error("format 1 value accepted on a format 2 volume")
	}
	mk, _ := NewMasterKey(kvMaster)
	v1, err := v1Header(t).Open(StaticKey{mk})
	if err != nil {
		t.Fatal(err)
	}
	legacy = v1.sealMeta([]byte("old"), "xattr user.mime")
	up, _ := v1Header(t).Upgrade(StaticKey{mk}, "vol", nil)
	upKeys, err := up.Open(StaticKey{mk})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*VolumeKeys{v1, upKeys} {
		if got, err := k.OpenXattrValue("user.mime", legacy, fileA); err != nil || string(got) != "old" {
			t.Fatalf("format 1 value on a format 1 or upgraded volume: %v", err)
		}
	}
}

// aliases returns other strings that Go's lenient base64 decoder reads as
// the same bytes as enc: the unused low bits of the last character set,
// and a newline inserted.
func aliases(t *testing.T, enc string) []string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var out []string
	if len(enc)%4 != 0 {
		last := strings.IndexByte(alphabet, enc[len(enc)-1])
		out = append(out, enc[:len(enc)-1]+string(alphabet[last|1]))
	}
	out = append(out, enc[:4]+"\n"+enc[4:], enc+"\r")
	want, _ := b64.DecodeString(enc)
	for _, a := range out {
		if got, err := b64.DecodeString(a); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q is no alias of %q for the lenient decoder", a, enc)
		}
	}
	return out
}

// Names, xattr names and symlink targets decode only from their canonical
// encoding, so two stored entries can never show as the same plaintext.
func TestCanonicalEncodingOnly(t *testing.T) {
	keys := testKeys(t)
	iv := ramp(1, 16)
	for _, name := range []string{"a", strings.Repeat("b", 16), strings.Repeat("c", 40)} {
		enc, _ := keys.EncryptName(name, iv)
		for _, a := range aliases(t, enc) {
			if _, err := keys.DecryptName(a, iv); !errors.Is(err, ErrBadName) {
				t.Errorf("name alias %q of %q decoded: %v", a, enc, err)
			}
		}
	}
	x, _ := keys.EncryptXattrName("user.x")
	for _, a := range aliases(t, x[len(XattrPrefix):]) {
		if _, ok := keys.DecryptXattrName(XattrPrefix + a); ok {
			t.Errorf("xattr name alias %q decoded", a)
		}
	}
	for _, target := range []string{"t", "tt", "ttt"} {
		s, _, _ := keys.SealSymlink(target)
		for _, a := range aliases(t, s) {
			if _, err := keys.OpenSymlink(a, nil); !errors.Is(err, ErrAuth) {
				t.Errorf("symlink alias %q opened: %v", a, err)
			}
		}
	}
}
