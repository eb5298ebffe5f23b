package archive

import (
	"strings"

	"github.com/securevol/securevol/crypto"
)

// A class says what securevol keeps under a backing name, and so which
// types and sizes an entry of that name may have (docs/FORMAT.md, "Layout
// of a backing folder").
type class uint8

const (
	// classEntry: an encrypted name, or the hashed form of a long one: a
	// plaintext entry of any type cryptfs makes.
	classEntry      class = iota
	classHeader           // the header, at the top only
	classLongTarget       // a long symlink target's file, at the top only
	classDirIV            // a directory's name IV
	classSidecar          // a long name's sidecar
)

// classify returns the class of the backing name name (in the top
// directory if atRoot), or false for a name securevol never makes.
func classify(name string, atRoot bool) (class, bool) {
	switch {
	case name == crypto.HeaderName:
		return classHeader, atRoot
	case name == crypto.DirIVName:
		return classDirIV, true
	case strings.HasPrefix(name, crypto.LongTargetPrefix):
		return classLongTarget, atRoot && crypto.IsLongTarget(name) && isBase64URL(name[len(crypto.LongTargetPrefix):])
	case strings.HasPrefix(name, crypto.LongNamePrefix):
		base, sidecar := strings.CutSuffix(name, crypto.LongNameSuffix)
		if !isLongName(base) {
			return 0, false
		}
		if sidecar {
			return classSidecar, true
		}
		return classEntry, true
	}
	return classEntry, len(name) <= crypto.MaxEncodedName && isBase64URL(name)
}

// isLongName: the hashed form of a long name, prefix and a base64url
// SHA-256 (crypto.BackingName).
func isLongName(name string) bool {
	rest, ok := strings.CutPrefix(name, crypto.LongNamePrefix)
	return ok && len(rest) == 43 && isBase64URL(rest)
}

// isBase64URL: a non-empty string of base64url characters, the alphabet
// of encrypted names, inline symlink targets and xattr names.
func isBase64URL(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// maxSize is the largest regular file of class c (-1: no bound but the
// stream's), and exact whether it must have that size.
func (c class) maxSize() (n int64, exact bool) {
	switch c {
	case classHeader:
		return crypto.MaxHeaderSize, false
	case classLongTarget:
		return maxLongTarget, false
	case classDirIV:
		return crypto.DirIVSize, true
	case classSidecar:
		return maxSidecar, false
	}
	return -1, false
}
