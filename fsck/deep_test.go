package fsck

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// deepTree is a valid encrypted tree depth directories deep, with a file
// of two blocks at the bottom. Its names are long, so its backing path is
// about 45 KiB, far past PATH_MAX: it is written one directory descriptor
// at a time, as the checker must read it. TestTreeMadeThroughMount makes a
// tree as deep through a mount.
type deepTree struct {
	root   string
	keys   *crypto.VolumeKeys
	bottom string // backing name of the file in the deepest directory
	path   []string
}

func writeDeepTree(t *testing.T, depth int) deepTree {
	t.Helper()
	tr := deepTree{root: t.TempDir()}
	mk, _ := crypto.RandomMasterKey()
	keys, _, err := initDir(tr.root, crypto.StaticKey{Key: mk})
	if err != nil {
		t.Fatal(err)
	}
	tr.keys = keys
	iv, err := readDirIV(tr.root)
	if err != nil {
		t.Fatal(err)
	}
	d, err := backing.OpenRoot(tr.root)
	if err != nil {
		t.Fatal(err)
	}
	for i := range depth {
		enc := mustEncrypt(t, keys, fmt.Sprintf("level %03d %s", i, strings.Repeat("x", 100)), iv)
		if err := d.Mkdir(enc, 0o755); err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		sub, err := d.OpenDir(enc)
		d.Close()
		if err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		d = sub
		if iv, err = crypto.NewDirIV(); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteNew(crypto.DirIVName, iv, 0o444); err != nil {
			t.Fatal(err)
		}
		tr.path = append(tr.path, enc)
	}
	defer d.Close()
	tr.bottom = mustEncrypt(t, keys, "bottom.txt", iv)
	hdr, id, _ := crypto.NewFileHeader()
	fc, _ := keys.FileCipher(id)
	text := []byte(strings.Repeat("deep ", 1000))
	data := fc.SealBlock(hdr, text[:crypto.BlockSize], 0)
	data = fc.SealBlock(data, text[crypto.BlockSize:], 1)
	if err := d.WriteNew(tr.bottom, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return tr
}

func mustEncrypt(t *testing.T, keys *crypto.VolumeKeys, name string, iv []byte) string {
	t.Helper()
	enc, err := keys.EncryptName(name, iv)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// openBottom opens the deepest directory, one component at a time.
func (tr deepTree) openBottom(t *testing.T) *backing.Dir {
	t.Helper()
	d, err := backing.OpenRoot(tr.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range tr.path {
		sub, err := d.OpenDir(name)
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		d = sub
	}
	return d
}

const deepTreeDepth = 300

func TestDeepTreeChecksClean(t *testing.T) {
	tr := writeDeepTree(t, deepTreeDepth)
	rep, ps := checkWithin(t, tr.keys, tr.root)
	if len(ps) != 0 {
		t.Fatalf("problems in a clean deep tree: %v", ps)
	}
	if rep.Dirs != deepTreeDepth+1 || rep.Files != 1 || rep.Blocks != 2 {
		t.Fatalf("report %+v, want %d dirs, 1 file, 2 blocks", rep, deepTreeDepth+1)
	}
}

// TestDeepTreeTampering: damage at the bottom is found and reported with
// its whole plaintext path.
func TestDeepTreeTampering(t *testing.T) {
	tr := writeDeepTree(t, deepTreeDepth)
	d := tr.openBottom(t)
	fd, err := d.OpenFile(tr.bottom, unix.O_RDWR, 0)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, []byte{0xff}, crypto.BlockOffset(1)+50); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	_, ps := checkWithin(t, tr.keys, tr.root)
	if len(ps) != 1 {
		t.Fatalf("problems %v, want one", ps)
	}
	wantProblem(t, ps, "block 1")
	if got := strings.Count(ps[0].Plain, "/level "); got != deepTreeDepth {
		t.Fatalf("problem's plaintext path has %d levels, want %d", got, deepTreeDepth)
	}
	if !strings.HasSuffix(ps[0].Plain, "/bottom.txt") || !strings.HasSuffix(ps[0].Backing, "/"+tr.bottom) {
		t.Fatalf("problem names %s (stored as %s), want bottom.txt", ps[0].Plain, ps[0].Backing)
	}
}
