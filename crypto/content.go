package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// File layout (docs/FORMAT.md): an 18-byte header (version, file ID), then
// blocks of up to BlockSize plaintext bytes, each stored as
// nonce(12) || ciphertext || tag(16). An empty file has no header.
const (
	FileFormatVersion = 2 // first two bytes of every file header, big endian
	FileIDSize        = 16
	FileHeaderSize    = 2 + FileIDSize
	BlockSize         = 4096
	NonceSize         = 12
	TagSize           = 16
	BlockOverhead     = NonceSize + TagSize
	CipherBlockSize   = BlockSize + BlockOverhead
)

// ErrAuth means a block, name or value failed authentication: it was
// tampered with, truncated or belongs elsewhere.
var ErrAuth = errors.New("authentication failed (ciphertext tampered with or corrupt)")

// NewFileHeader returns a fresh file header and the random file ID in it.
func NewFileHeader() (header, id []byte, err error) {
	header = make([]byte, FileHeaderSize)
	binary.BigEndian.PutUint16(header, FileFormatVersion)
	if _, err := io.ReadFull(rand.Reader, header[2:]); err != nil {
		return nil, nil, fmt.Errorf("read random: %w", err)
	}
	return header, header[2:], nil
}

// ParseFileHeader checks a file header and returns the file ID in it.
func ParseFileHeader(b []byte) (id []byte, err error) {
	if len(b) < FileHeaderSize {
		return nil, fmt.Errorf("file header: %d bytes, want %d: %w", len(b), FileHeaderSize, ErrAuth)
	}
	if v := binary.BigEndian.Uint16(b); v != FileFormatVersion {
		return nil, fmt.Errorf("file header: version %d, want %d: %w", v, FileFormatVersion, ErrAuth)
	}
	id = b[2:FileHeaderSize]
	allZero := true
	for _, c := range id {
		if c != 0 {
			allZero = false
			break
		}
	}
	if allZero {
		return nil, fmt.Errorf("file header: zero file ID: %w", ErrAuth)
	}
	return id, nil
}

// FileCipher seals and opens the blocks of one file.
type FileCipher struct {
	aead cipher.AEAD
	id   [FileIDSize]byte
}

// ID returns the file ID the cipher was derived from.
func (f *FileCipher) ID() []byte { return append([]byte(nil), f.id[:]...) }

// ad is the associated data of a block: its number and the file ID, so a
// block moved to another offset or file fails authentication.
func (f *FileCipher) ad(buf *[8 + FileIDSize]byte, block uint64) []byte {
	binary.BigEndian.PutUint64(buf[:8], block)
	copy(buf[8:], f.id[:])
	return buf[:]
}

// SealBlock appends the sealed form of plain (at most BlockSize bytes), the
// block number block, to dst. With room in dst it does not allocate.
func (f *FileCipher) SealBlock(dst, plain []byte, block uint64) []byte {
	if len(plain) > BlockSize {
		panic("SealBlock: block too large")
	}
	n := len(dst)
	dst = slices.Grow(dst, NonceSize+len(plain)+TagSize)[:n+NonceSize]
	if _, err := rand.Read(dst[n:]); err != nil {
		panic("crypto/rand: " + err.Error()) // crypto/rand.Read never fails on Linux
	}
	var adb [8 + FileIDSize]byte
	return f.aead.Seal(dst, dst[n:], plain, f.ad(&adb, block))
}

// sealBlockNonce is SealBlock with a given nonce (for known-answer tests).
func (f *FileCipher) sealBlockNonce(dst, plain []byte, block uint64, nonce []byte) []byte {
	var adb [8 + FileIDSize]byte
	dst = append(dst, nonce...)
	return f.aead.Seal(dst, nonce, plain, f.ad(&adb, block))
}

// OpenBlock appends the plaintext of the sealed block c, block number
// block, to dst. A block that is all zero bytes is a hole (the file was
// extended without writing there) and opens to zeros. (The zero test stops
// at the first non-zero word, so it costs nothing on real blocks.)
func (f *FileCipher) OpenBlock(dst, c []byte, block uint64) ([]byte, error) {
	if len(c) > BlockOverhead && len(c) <= CipherBlockSize && !isZero(c) {
		var adb [8 + FileIDSize]byte
		out, err := f.aead.Open(dst, c[:NonceSize], c[NonceSize:], f.ad(&adb, block))
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", block, ErrAuth)
		}
		return out, nil
	}
	if len(c) > BlockOverhead && len(c) <= CipherBlockSize {
		n := len(dst)
		dst = slices.Grow(dst, len(c)-BlockOverhead)[:n+len(c)-BlockOverhead]
		clear(dst[n:])
		return dst, nil
	}
	return nil, fmt.Errorf("block %d: %d bytes: %w", block, len(c), ErrAuth)
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// PlainSize converts a backing file's size to the plaintext size. Sizes
// that no valid file can have (a trailing partial block of at most
// BlockOverhead bytes) are rounded down.
func PlainSize(cipherSize uint64) uint64 {
	if cipherSize <= FileHeaderSize {
		return 0
	}
	c := cipherSize - FileHeaderSize
	full := c / CipherBlockSize
	rest := c % CipherBlockSize
	p := full * BlockSize
	if rest > BlockOverhead {
		p += rest - BlockOverhead
	}
	return p
}

// CipherSize converts a plaintext size to the backing file's size.
func CipherSize(plainSize uint64) uint64 {
	if plainSize == 0 {
		return 0
	}
	full := plainSize / BlockSize
	rest := plainSize % BlockSize
	c := FileHeaderSize + full*CipherBlockSize
	if rest > 0 {
		c += rest + BlockOverhead
	}
	return c
}

// BlockOffset is where block number block starts in the backing file.
func BlockOffset(block uint64) int64 {
	return int64(FileHeaderSize + block*CipherBlockSize)
}
