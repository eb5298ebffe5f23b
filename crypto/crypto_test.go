package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	v := keys.SealXattrValue("user.mime", []byte("text/plain"))
	if got, err := keys.OpenXattrValue("user.mime", v); err != nil || string(got) != "text/plain" {
		t.Fatal("xattr value round trip")
	}
	if _, err := keys.OpenXattrValue("user.other", v); err == nil {
		t.Error("xattr value moved to another name was accepted")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 || st.Size() != KeySize {
		t.Fatalf("key file mode %v size %d", st.Mode(), st.Size())
	}
	before, _ := os.ReadFile(path)
	if err := GenerateKeyFile(path); err == nil {
		t.Fatal("existing key file overwritten")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("key changed")
	}
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%v %+v %#v %s", k, k, k, k); strings.Contains(s, fmt.Sprintf("%x", before[:4])) || !strings.Contains(s, "redacted") {
		t.Fatalf("key leaks through formatting: %s", s)
	}
	os.Chmod(path, 0o640)
	if _, err := LoadKeyFile(path); !errors.Is(err, ErrKeyFilePerms) {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("abc"), 0o600)
	if _, err := LoadKeyFile(short); err == nil || !strings.Contains(err.Error(), "securevol key generate") {
		t.Fatalf("short key: %v", err)
	}
}

func fastKDF() *KDFParams {
	return &KDFParams{Algorithm: "argon2id", Salt: ramp(3, 32), Time: 1, MemoryKiB: 64, Threads: 1}
}

func TestDirLifecycle(t *testing.T) {
	k1, _ := RandomMasterKey()
	k2, _ := RandomMasterKey()
	pass, err := NewPassphrase([]byte("correct horse"), fastKDF())
	if err != nil {
		t.Fatal(err)
	}
	wrongPass, _ := NewPassphrase([]byte("wrong horse"), fastKDF())
	for _, tc := range []struct {
		name          string
		ks, wrong, to KeySource
	}{
		{"keyfile", StaticKey{k1}, StaticKey{k2}, StaticKey{k2}},
		{"passphrase", pass, wrongPass, StaticKey{k1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keys, h, err := InitDir(dir, tc.ks, map[string]string{"name": "v1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := InitDir(dir, tc.ks, nil); err == nil {
				t.Fatal("InitDir on a used directory succeeded")
			}
			raw, _ := os.ReadFile(filepath.Join(dir, HeaderName))
			if bytes.Contains(raw, keys.content[:8]) {
				t.Fatal("header holds key material in the clear")
			}
			if _, _, err := OpenDir(dir, tc.wrong); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("wrong key: %v", err)
			}
			got, h2, err := OpenDir(dir, tc.ks)
			if err != nil || got.content != keys.content || h2.ID != h.ID || h2.Labels["name"] != "v1" {
				t.Fatalf("open: %v", err)
			}
			if err := Rewrap(dir, tc.ks, tc.to); err != nil {
				t.Fatal(err)
			}
			if err := Rewrap(dir, tc.ks, tc.to); err != nil {
				t.Fatalf("second (resumed) rewrap: %v", err)
			}
			if _, _, err := OpenDir(dir, tc.ks); err == nil {
				t.Fatal("old key still opens the directory after rotation")
			}
			got, _, err = OpenDir(dir, tc.to)
			if err != nil || got.content != keys.content {
				t.Fatalf("new key: %v", err)
			}
			if err := DestroyKey(dir); err != nil {
				t.Fatal(err)
			}
			if _, _, err := OpenDir(dir, tc.to); !errors.Is(err, ErrNoHeader) {
				t.Fatalf("after DestroyKey: %v", err)
			}
		})
	}
}

func TestHeaderRejectsMalformed(t *testing.T) {
	k, _ := RandomMasterKey()
	for _, tc := range []struct{ name, content string }{
		{"json", "{not json"},
		{"format", `{"format":99,"id":"000102030405060708090a0b0c0d0e0f","content":"AES-256-GCM/4096","names":"EME-AES-256/base64url"}`},
		{"id", `{"format":1,"id":"../../etc","content":"AES-256-GCM/4096","names":"EME-AES-256/base64url"}`},
		{"short key", `{"format":1,"id":"000102030405060708090a0b0c0d0e0f","content":"AES-256-GCM/4096","names":"EME-AES-256/base64url","wrapped_key":"AAAA"}`},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, HeaderName), []byte(tc.content), 0o600)
		if _, _, err := OpenDir(dir, StaticKey{k}); err == nil {
			t.Errorf("%s: malformed header accepted", tc.name)
		}
	}
}
