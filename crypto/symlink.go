package crypto

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Symlink targets are sealed with the meta key (AES-256-GCM, random nonce,
// AD "symlink") and stored base64url as the backing symlink's own target.
// That form is 4/3 of the target plus 38 bytes, and a backing target can
// hold at most PATH_MAX-1 bytes, so targets longer than maxInlineSymlink
// are sealed into a file of the volume's root directory instead, named
// after the SHA-256 of its contents, and the backing symlink stores that
// name (docs/FORMAT.md, "Symlink targets").
const (
	// MaxSymlinkLen is the longest target, PATH_MAX-1 as on ext4.
	MaxSymlinkLen = 4095
	// maxInlineSymlink is the longest target stored inline: its sealed
	// base64 form is 4091 bytes.
	maxInlineSymlink = 3040
	// LongTargetPrefix starts the name of a long target's file, and the
	// backing symlink that refers to it.
	LongTargetPrefix = "sv.target."
)

// longTargetRefLen is the length of a reference: prefix and a base64url
// SHA-256. It is 1 modulo 4, which no unpadded base64 string is, so a
// reference is told from an inline target by its length alone.
const longTargetRefLen = len(LongTargetPrefix) + 43

// SealSymlink seals target. For a short target, stored is what the backing
// symlink holds and blob is nil. For a long one, blob must be written to
// the root-directory file named stored, which the backing symlink holds.
func (v *VolumeKeys) SealSymlink(target string) (stored string, blob []byte, err error) {
	if len(target) > MaxSymlinkLen {
		return "", nil, fmt.Errorf("%w: symlink target longer than %d bytes", ErrBadName, MaxSymlinkLen)
	}
	sealed := v.sealMeta([]byte(target), "symlink")
	if len(target) <= maxInlineSymlink {
		return b64.EncodeToString(sealed), nil, nil
	}
	return longTargetRef(sealed), sealed, nil
}

func longTargetRef(blob []byte) string {
	h := sha256.Sum256(blob)
	return LongTargetPrefix + b64.EncodeToString(h[:])
}

// IsLongTarget reports whether a backing symlink's target refers to a
// long target's file.
func IsLongTarget(stored string) bool {
	return len(stored) == longTargetRefLen && strings.HasPrefix(stored, LongTargetPrefix)
}

// OpenSymlink returns the target of a backing symlink that stores stored;
// for a long target (IsLongTarget), blob is the content of the file of
// that name, which must hash to it.
func (v *VolumeKeys) OpenSymlink(stored string, blob []byte) (string, error) {
	var sealed []byte
	if IsLongTarget(stored) {
		if subtle.ConstantTimeCompare([]byte(longTargetRef(blob)), []byte(stored)) != 1 {
			return "", fmt.Errorf("symlink target file %s does not match its name: %w", stored, ErrAuth)
		}
		sealed = blob
	} else {
		c, err := decodeStrict(stored)
		if err != nil {
			return "", fmt.Errorf("symlink target: %w", ErrAuth)
		}
		sealed = c
	}
	p, err := v.openMeta(sealed, "symlink")
	if err != nil {
		return "", fmt.Errorf("symlink target: %w", err)
	}
	return string(p), nil
}

// SymlinkPlainLen is the target length of a backing symlink whose own
// target is storedLen bytes long; ok is false for a long target's
// reference, whose length says nothing (ask its file's size).
func SymlinkPlainLen(storedLen uint64) (n uint64, ok bool) {
	if storedLen == uint64(longTargetRefLen) {
		return 0, false
	}
	return sealedPlainLen(storedLen * 6 / 8), true
}

// LongTargetPlainLen is the target length of a long target whose file is
// fileLen bytes long.
func LongTargetPlainLen(fileLen uint64) uint64 { return sealedPlainLen(fileLen) }

func sealedPlainLen(sealed uint64) uint64 {
	if sealed < NonceSize+TagSize {
		return 0
	}
	return sealed - NonceSize - TagSize
}

// decodeStrict decodes canonical unpadded base64url only: one stored form
// per value.
func decodeStrict(s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b64.EncodeToString(b) != s {
		return nil, ErrAuth
	}
	return b, nil
}
