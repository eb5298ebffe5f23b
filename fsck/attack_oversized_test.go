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
		at   func(t *testing.T, l layout) string
		size int64
		want []string
	}{
		{"directory IV, one byte more", func(_ *testing.T, l layout) string { return filepath.Join(l.dir, crypto.DirIVName) },
			crypto.DirIVSize + 1, []string{"directory IV: backing folder: larger than securevol ever writes"}},
		{"directory IV, sparse terabyte", func(_ *testing.T, l layout) string { return filepath.Join(l.dir, crypto.DirIVName) },
			1 << 40, []string{"directory IV: backing folder: larger than securevol ever writes"}},
		{"directory IV, one byte less", func(_ *testing.T, l layout) string { return filepath.Join(l.dir, crypto.DirIVName) },
			crypto.DirIVSize - 1, []string{"directory IV: backing folder: damaged bookkeeping file"}},
		{"sidecar, 64 KiB", addLongName,
			64 << 10, []string{"long-name sidecar: backing folder: larger than securevol ever writes"}},
		{"sidecar, sparse terabyte", addLongName,
			1 << 40, []string{"long-name sidecar: backing folder: larger than securevol ever writes"}},
		{"long symlink target, sparse terabyte", addLongTarget,
			1 << 40, []string{"symlink: target file sv.target.", "larger than securevol ever writes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, l := writeTree(t)
			p := tc.at(t, l)
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, tc.size); err != nil {
				t.Fatal(err)
			}
			_, ps := checkWithin(t, keys, l.root)
			wantProblem(t, ps, tc.want...)
		})
	}
}

// TestLongestSidecar: the bound on sidecars is not below what securevol
// writes for the longest name there is (255 bytes), nor is the bound on
// long symlink targets below the longest target (PATH_MAX-1).
func TestLongestSidecar(t *testing.T) {
	keys, l := writeTree(t)
	iv, err := readDirIV(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := keys.EncryptName(strings.Repeat("x", 255), iv)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := crypto.BackingName(enc)
	if err := os.WriteFile(filepath.Join(l.dir, crypto.LongNameSidecar(name)), []byte(enc), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	addLongTarget(t, l)
	rep, ps := checkWithin(t, keys, l.root)
	if len(ps) != 0 || rep.Files != 2 || rep.Symlinks != 2 {
		t.Fatalf("report %+v, problems %v: want 2 files, 2 symlinks and no problems", rep, ps)
	}
}
