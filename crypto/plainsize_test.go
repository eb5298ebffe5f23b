package crypto

import "testing"

// Stored sizes no valid file has: up to a header is empty, a last block
// cut inside its nonce or tag counts as one (unreadable) byte.
func TestPlainSizeOfImpossibleSizes(t *testing.T) {
	for _, tc := range []struct{ cipher, plain uint64 }{
		{1, 0},
		{FileHeaderSize - 1, 0},
		{FileHeaderSize, 0},
		{FileHeaderSize + 1, 1},
		{FileHeaderSize + BlockOverhead, 1},
		{FileHeaderSize + BlockOverhead + 1, 1},
		{FileHeaderSize + CipherBlockSize + 1, BlockSize + 1},
		{FileHeaderSize + CipherBlockSize + BlockOverhead, BlockSize + 1},
		{FileHeaderSize + CipherBlockSize + BlockOverhead + 2, BlockSize + 2},
	} {
		if got := PlainSize(tc.cipher); got != tc.plain {
			t.Errorf("PlainSize(%d) = %d, want %d", tc.cipher, got, tc.plain)
		}
	}
}
