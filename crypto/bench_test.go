package crypto

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

// Micro-benchmarks of the primitives on the FUSE hot path. They bound what
// the filesystem can reach: a 4 KiB block must seal and open well above the
// disk's bandwidth, and name encryption runs once per path component per
// lookup or readdir entry. Run with: go test -run '^$' -bench . ./crypto

func benchKeys(b *testing.B) *VolumeKeys {
	b.Helper()
	vk := make([]byte, KeySize)
	if _, err := rand.Read(vk); err != nil {
		b.Fatal(err)
	}
	return newVolumeKeys(vk)
}

func benchFileCipher(b *testing.B) *FileCipher {
	b.Helper()
	_, id, err := NewFileHeader()
	if err != nil {
		b.Fatal(err)
	}
	fc, err := benchKeys(b).FileCipher(id)
	if err != nil {
		b.Fatal(err)
	}
	return fc
}

func BenchmarkSealBlock4K(b *testing.B) {
	fc := benchFileCipher(b)
	plain := bytes.Repeat([]byte{0x5a}, BlockSize)
	dst := make([]byte, 0, CipherBlockSize)
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		dst = fc.SealBlock(dst[:0], plain, uint64(i))
	}
	if len(dst) != CipherBlockSize {
		b.Fatalf("sealed block is %d bytes, want %d", len(dst), CipherBlockSize)
	}
}

func BenchmarkOpenBlock4K(b *testing.B) {
	fc := benchFileCipher(b)
	plain := bytes.Repeat([]byte{0x5a}, BlockSize)
	sealed := fc.SealBlock(nil, plain, 7)
	dst := make([]byte, 0, BlockSize)
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	var err error
	for b.Loop() {
		dst, err = fc.OpenBlock(dst[:0], sealed, 7)
		if err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(dst, plain) {
		b.Fatal("OpenBlock returned other bytes than were sealed")
	}
}

// BenchmarkOpenBlockHole measures the all-zero (hole) path, which must not
// be slower than a real block: sparse files read it for every hole.
func BenchmarkOpenBlockHole4K(b *testing.B) {
	fc := benchFileCipher(b)
	hole := make([]byte, CipherBlockSize)
	dst := make([]byte, 0, BlockSize)
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	var err error
	for b.Loop() {
		dst, err = fc.OpenBlock(dst[:0], hole, 3)
		if err != nil {
			b.Fatal(err)
		}
	}
	if len(dst) != BlockSize {
		b.Fatalf("hole opened to %d bytes, want %d", len(dst), BlockSize)
	}
}

// nameCases are typical lengths: a short source file name, a longer one,
// and a 255-byte name (the longest allowed, hashed on disk).
var nameCases = []struct {
	label string
	name  string
}{
	{"short", "main.go"},
	{"medium", "zsyscall_linux_amd64_generated_test.go"},
	{"max", strings.Repeat("n", 255)},
}

func BenchmarkEncryptName(b *testing.B) {
	keys := benchKeys(b)
	iv, err := NewDirIV()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range nameCases {
		b.Run(tc.label, func(b *testing.B) {
			b.SetBytes(int64(len(tc.name)))
			b.ReportAllocs()
			var enc string
			for b.Loop() {
				if enc, err = keys.EncryptName(tc.name, iv); err != nil {
					b.Fatal(err)
				}
			}
			if enc == "" || strings.Contains(enc, tc.name) {
				b.Fatalf("EncryptName(%q) = %q", tc.name, enc)
			}
		})
	}
}

func BenchmarkDecryptName(b *testing.B) {
	keys := benchKeys(b)
	iv, err := NewDirIV()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range nameCases {
		b.Run(tc.label, func(b *testing.B) {
			enc, err := keys.EncryptName(tc.name, iv)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.name)))
			b.ReportAllocs()
			var dec string
			for b.Loop() {
				if dec, err = keys.DecryptName(enc, iv); err != nil {
					b.Fatal(err)
				}
			}
			if dec != tc.name {
				b.Fatalf("DecryptName = %q, want %q", dec, tc.name)
			}
		})
	}
}

// BenchmarkFileCipher is the per-open cost of a file's key (HKDF-SHA256 plus
// AES key schedule and GCM set-up); untar and ls -lR pay it per file unless
// the filesystem caches ciphers per inode.
func BenchmarkFileCipher(b *testing.B) {
	keys := benchKeys(b)
	_, id, err := NewFileHeader()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var fc *FileCipher
	for b.Loop() {
		if fc, err = keys.FileCipher(id); err != nil {
			b.Fatal(err)
		}
	}
	if fc == nil || !bytes.Equal(fc.id[:], id) {
		b.Fatal("FileCipher did not keep the file ID")
	}
}

// BenchmarkNewFileHeader is the per-create cost of a file's random ID.
func BenchmarkNewFileHeader(b *testing.B) {
	b.ReportAllocs()
	var h []byte
	var err error
	for b.Loop() {
		if h, _, err = NewFileHeader(); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := ParseFileHeader(h); err != nil {
		b.Fatal(err)
	}
}
