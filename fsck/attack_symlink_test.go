package fsck

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/securevol/securevol/crypto"
)

// TestPlantedSymlinks plants symlinks that point out of the backing folder
// where securevol keeps an entry or a file of its own. Each is reported and
// none is followed: everything outside is a FIFO, so following one would
// hang, and inotify shows that nothing outside was opened.
func TestPlantedSymlinks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     func(t *testing.T, l layout) string // the entry replaced
		target func(o *outsideDir) string
		want   []string
	}{
		{"file (last component)", func(_ *testing.T, l layout) string { return l.file },
			func(o *outsideDir) string { return o.fifo }, []string{"symlink target"}},
		{"directory (intermediate component)", func(_ *testing.T, l layout) string { return l.dir },
			func(o *outsideDir) string { return o.dir }, []string{"symlink target"}},
		{"directory IV", func(_ *testing.T, l layout) string { return filepath.Join(l.dir, crypto.DirIVName) },
			func(o *outsideDir) string { return o.fifo }, []string{"directory IV: unexpected symlink"}},
		{"long-name sidecar", addLongName,
			func(o *outsideDir) string { return o.fifo }, []string{"long-name sidecar: unexpected symlink"}},
		{"long symlink target", addLongTarget,
			func(o *outsideDir) string { return o.fifo }, []string{"symlink: target file " + crypto.LongTargetPrefix, "unexpected symlink"}},
		{"volume header", func(_ *testing.T, l layout) string { return filepath.Join(l.root, crypto.HeaderName) },
			func(o *outsideDir) string { return o.fifo }, []string{crypto.HeaderName, "unexpected symlink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, l := writeTree(t)
			o := newOutside(t)
			target := tc.target(o)
			replace(t, tc.at(t, l), func(p string) error { return os.Symlink(target, p) })
			_, ps := checkWithin(t, keys, l.root, o.fifos...)
			wantProblem(t, ps, tc.want...)
			o.untouched(t)
		})
	}
}

// TestSymlinkedRoot: the backing folder itself being a symlink is refused
// (its last component is never followed), before anything is read.
func TestSymlinkedRoot(t *testing.T) {
	keys, l := writeTree(t)
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(l.root, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(link, keys, func(p Problem) { t.Errorf("reported %v", p) }); err == nil {
		t.Fatal("a symlinked backing folder was walked")
	}
}
