package fsck

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// nodeKinds are the entries a hostile folder can plant that must never be
// opened: opening a FIFO blocks without a writer, opening a device runs
// its driver.
var nodeKinds = []struct {
	name, what string
	mode       uint32
	dev        int
	needRoot   bool
}{
	{"FIFO", "FIFO", unix.S_IFIFO, 0, false},
	{"socket", "socket", unix.S_IFSOCK, 0, false},
	{"character device", "character device", unix.S_IFCHR, int(unix.Mkdev(1, 3)), true}, // /dev/null
	{"block device", "block device", unix.S_IFBLK, int(unix.Mkdev(7, 0)), true},         // /dev/loop0
}

// TestPlantedNodes plants each kind of node where securevol keeps a file
// of its own: reported by type, never opened, no hang.
func TestPlantedNodes(t *testing.T) {
	places := []struct {
		name string
		at   func(t *testing.T, l layout) string
		want string // besides the type
	}{
		{"directory IV", func(_ *testing.T, l layout) string { return filepath.Join(l.dir, crypto.DirIVName) }, "directory IV: "},
		{"long-name sidecar", addLongName, "long-name sidecar: "},
		{"long symlink target", addLongTarget, "symlink: target file " + crypto.LongTargetPrefix},
		{"volume header", func(_ *testing.T, l layout) string { return filepath.Join(l.root, crypto.HeaderName) }, crypto.HeaderName},
	}
	for _, kind := range nodeKinds {
		for _, place := range places {
			t.Run(kind.name+" as "+place.name, func(t *testing.T) {
				if kind.needRoot {
					requireRoot(t)
				}
				keys, l := writeTree(t)
				p := place.at(t, l)
				replace(t, p, func(p string) error { return unix.Mknod(p, kind.mode|0o600, kind.dev) })
				seen := watchOpens(t, filepath.Dir(p))
				_, ps := checkWithin(t, keys, l.root, p)
				wantProblem(t, ps, place.want, "unexpected "+kind.what+" in the backing folder")
				notOpened(t, seen, p)
			})
		}
	}
}

// TestNodeInPlaceOfFile: a node under a file's valid name is what mknod
// through the mount stores (names are not authenticated, so fsck cannot
// tell it from one the user made): it is counted, not opened, and nothing
// hangs. Under a name that is no encrypted name, it is reported.
func TestNodeInPlaceOfFile(t *testing.T) {
	for _, kind := range nodeKinds {
		t.Run(kind.name, func(t *testing.T) {
			if kind.needRoot {
				requireRoot(t)
			}
			keys, l := writeTree(t)
			replace(t, l.file, func(p string) error { return unix.Mknod(p, kind.mode|0o600, kind.dev) })
			garbage := filepath.Join(l.dir, "not-an-encrypted-name")
			if err := unix.Mknod(garbage, kind.mode|0o600, kind.dev); err != nil {
				t.Fatal(err)
			}
			seen := watchOpens(t, l.dir)
			rep, ps := checkWithin(t, keys, l.root, l.file, garbage)
			if rep.Specials != 1 || rep.Files != 0 || rep.Blocks != 0 {
				t.Errorf("report %+v, want 1 special file and no files", rep)
			}
			if len(ps) != 1 {
				t.Errorf("problems %v, want one (the bad name)", ps)
			}
			wantProblem(t, ps, "not-an-encrypted-name", "name")
			notOpened(t, seen, l.file, garbage)
		})
	}
}

// notOpened fails if any of paths (all in the directory seen watches) was
// opened.
func notOpened(t *testing.T, seen *opens, paths ...string) {
	t.Helper()
	for _, got := range seen.names(t) {
		for _, p := range paths {
			if got == filepath.Base(p) {
				t.Fatalf("fsck opened the planted %s", got)
			}
		}
	}
}
