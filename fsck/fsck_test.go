package fsck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// layout writes a small encrypted tree with the crypto package directly,
// as the FUSE layer lays it out: /dir/file (3 blocks), /link, an xattr.
type layout struct {
	root, dir, file, link string
	keys                  *crypto.VolumeKeys
}

func writeTree(t *testing.T) (*crypto.VolumeKeys, layout) {
	t.Helper()
	root := t.TempDir()
	mk, _ := crypto.RandomMasterKey()
	var keys *crypto.VolumeKeys
	var rootIV []byte
	if err := backing.WithRoot(root, func(d *backing.Dir) (err error) {
		if _, keys, err = backing.InitVolume(d, crypto.StaticKey{Key: mk}, "", nil); err == nil {
			rootIV, err = backing.ReadDirIV(d)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	encDir, _ := keys.EncryptName("dir", rootIV)
	dir := filepath.Join(root, encDir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var dirIV []byte
	if err := backing.WithRoot(dir, func(d *backing.Dir) (err error) {
		dirIV, err = backing.CreateDirIV(d)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	encFile, _ := keys.EncryptName("file.txt", dirIV)
	hdr, id, _ := crypto.NewFileHeader()
	fc, _ := keys.FileCipher(id)
	data := hdr
	text := []byte(strings.Repeat("plaintext ", 410))
	for b, n := range []int{crypto.BlockSize, crypto.BlockSize, 100} {
		data = fc.SealBlock(data, text[:n], uint64(b))
	}
	file := filepath.Join(dir, encFile)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	xn, _ := keys.EncryptXattrName("user.color")
	if err := unix.Setxattr(file, xn, keys.SealXattrValue("user.color", []byte("blue"), id), 0); err != nil {
		t.Fatalf("setxattr (backing fs needs user xattrs): %v", err)
	}
	encLink, _ := keys.EncryptName("link", rootIV)
	target, _, _ := keys.SealSymlink("dir/file.txt")
	link := filepath.Join(root, encLink)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return keys, layout{root, dir, file, link, keys}
}

func check(t *testing.T, keys *crypto.VolumeKeys, root string) (Report, []Problem) {
	t.Helper()
	var ps []Problem
	rep, err := Check(root, keys, func(p Problem) { ps = append(ps, p) })
	if err != nil {
		t.Fatal(err)
	}
	return rep, ps
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

func TestCleanTree(t *testing.T) {
	keys, l := writeTree(t)
	rep, ps := check(t, keys, l.root)
	if len(ps) != 0 || rep.Problems != 0 {
		t.Fatalf("problems in a clean tree: %v", ps)
	}
	if rep.Dirs != 2 || rep.Files != 1 || rep.Symlinks != 1 || rep.Blocks != 3 {
		t.Fatalf("report %+v, want 2 dirs, 1 file, 1 symlink, 3 blocks", rep)
	}
}

func TestFindsTampering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, l layout)
		want   string
	}{
		{"block byte", func(t *testing.T, l layout) { flipByte(t, l.file, crypto.BlockOffset(1)+100) }, "block 1"},
		{"file header", func(t *testing.T, l layout) { flipByte(t, l.file, 0) }, "file header"},
		{"file ID", func(t *testing.T, l layout) { flipByte(t, l.file, 5) }, "block 0"},
		{"truncated", func(t *testing.T, l layout) { os.Truncate(l.file, crypto.BlockOffset(2)+10) }, "block 2"},
		{"name", func(t *testing.T, l layout) {
			os.Rename(l.file, filepath.Join(l.dir, "AAAAAAAAAAAAAAAAAAAAAA"))
		}, "name"},
		{"dir IV", func(t *testing.T, l layout) {
			// Names are not authenticated: under a changed IV one decodes
			// to valid padding about once in 256, so give the directory
			// 16 more entries; all of them passing is out of reach.
			iv, _ := os.ReadFile(filepath.Join(l.dir, crypto.DirIVName))
			for i := range 16 {
				enc, _ := l.keys.EncryptName(fmt.Sprintf("extra-%d", i), iv)
				if err := os.WriteFile(filepath.Join(l.dir, enc), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			flipByte(t, filepath.Join(l.dir, crypto.DirIVName), 3)
		}, "name"},
		{"symlink", func(t *testing.T, l layout) {
			target, _ := os.Readlink(l.link)
			os.Remove(l.link)
			os.Symlink("A"+target[1:], l.link)
		}, "symlink"},
		{"xattr", func(t *testing.T, l layout) {
			buf := make([]byte, 256)
			names := make([]byte, 256)
			n, _ := unix.Listxattr(l.file, names)
			name := strings.TrimRight(string(names[:n]), "\x00")
			m, _ := unix.Getxattr(l.file, name, buf)
			buf[m-1] ^= 1
			unix.Setxattr(l.file, name, buf[:m], 0)
		}, "xattr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, l := writeTree(t)
			tc.tamper(t, l)
			_, ps := check(t, keys, l.root)
			if len(ps) == 0 {
				t.Fatal("tampering not found")
			}
			// A changed file ID also unbinds the file's xattrs: any
			// problem may come first, one must name what was changed.
			if !slices.ContainsFunc(ps, func(p Problem) bool { return strings.Contains(p.String(), tc.want) }) {
				t.Fatalf("problems %q do not mention %q", ps, tc.want)
			}
		})
	}
}
