package backing

import "github.com/securevol/securevol/crypto"

// ReadFileID returns the file ID in the header of the open backing file
// fd, or nil for a file no longer than a header: it holds no block, so it
// counts as empty and its next write starts a fresh ID (docs/FORMAT.md,
// "Sizes no honest file has"). A malformed header is crypto.ErrAuth.
func ReadFileID(fd int) ([]byte, error) {
	var hdr [crypto.FileHeaderSize + 1]byte
	k, err := PreadFull(fd, hdr[:], 0)
	if err != nil {
		return nil, err
	}
	if k <= crypto.FileHeaderSize {
		return nil, nil
	}
	return crypto.ParseFileHeader(hdr[:crypto.FileHeaderSize])
}
