package fsck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securevol/securevol/crypto"
)

// TestOversizedBookkeeping: a directory IV or long-name sidecar larger
// than securevol ever writes is reported without being read whole (a
// sparse terabyte read whole would run past checkWithin's deadline or
// out of memory).
func TestOversizedBookkeeping(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(l layout, sidecar string) string
		size int64
		want string
	}{
		{"directory IV, one byte more", func(l layout, _ string) string { return filepath.Join(l.dir, crypto.DirIVName) },
			crypto.DirIVSize + 1, "directory IV: backing folder: larger than securevol ever writes"},
		{"directory IV, sparse terabyte", func(l layout, _ string) string { return filepath.Join(l.dir, crypto.DirIVName) },
			1 << 40, "directory IV: backing folder: larger than securevol ever writes"},
		{"directory IV, one byte less", func(l layout, _ string) string { return filepath.Join(l.dir, crypto.DirIVName) },
			crypto.DirIVSize - 1, "directory IV: 15 bytes"},
		{"sidecar, one byte more", func(_ layout, sidecar string) string { return sidecar },
			maxSidecarSize + 1, "long-name sidecar: backing folder: larger than securevol ever writes"},
		{"sidecar, sparse terabyte", func(_ layout, sidecar string) string { return sidecar },
			1 << 40, "long-name sidecar: backing folder: larger than securevol ever writes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, l := writeTree(t)
			p := tc.at(l, addLongName(t, l))
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, tc.size); err != nil {
				t.Fatal(err)
			}
			_, ps := checkWithin(t, keys, l.root)
			wantProblem(t, ps, tc.want)
		})
	}
}

// TestLongestSidecar: the bound on sidecars is not below what securevol
// writes for the longest name there is (255 bytes).
func TestLongestSidecar(t *testing.T) {
	keys, l := writeTree(t)
	iv, err := crypto.ReadDirIV(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := keys.EncryptName(strings.Repeat("x", 255), iv)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != maxSidecarSize {
		t.Fatalf("the longest encoded name is %d bytes, maxSidecarSize %d", len(enc), maxSidecarSize)
	}
	name, _ := crypto.BackingName(enc)
	if err := os.WriteFile(filepath.Join(l.dir, crypto.LongNameSidecar(name)), []byte(enc), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, ps := checkWithin(t, keys, l.root)
	if len(ps) != 0 || rep.Files != 2 {
		t.Fatalf("report %+v, problems %v: want 2 files and no problems", rep, ps)
	}
}
