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
		at     func(l layout, sidecar string) string // the entry replaced
		target func(o *outsideDir) string
		want   string
	}{
		{"file (last component)", func(l layout, _ string) string { return l.file },
			func(o *outsideDir) string { return o.fifo }, "symlink target"},
		{"directory (intermediate component)", func(l layout, _ string) string { return l.dir },
			func(o *outsideDir) string { return o.dir }, "symlink target"},
		{"directory IV", func(l layout, _ string) string { return filepath.Join(l.dir, crypto.DirIVName) },
			func(o *outsideDir) string { return o.fifo }, "directory IV: unexpected symlink"},
		{"long-name sidecar", func(_ layout, sidecar string) string { return sidecar },
			func(o *outsideDir) string { return o.fifo }, "long-name sidecar: unexpected symlink"},
		{"volume header", func(l layout, _ string) string { return filepath.Join(l.root, crypto.HeaderName) },
			func(o *outsideDir) string { return o.fifo }, "unexpected symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, l := writeTree(t)
			sidecar := addLongName(t, l)
			o := newOutside(t)
			target := tc.target(o)
			replace(t, tc.at(l, sidecar), func(p string) error { return os.Symlink(target, p) })
			_, ps := checkWithin(t, keys, l.root, o.fifos...)
			wantProblem(t, ps, tc.want)
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
