package archive

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// volume is a backing folder initialised under a random master key.
type volume struct {
	t       testing.TB
	backing string
	keys    *crypto.VolumeKeys
}

func newVolume(t testing.TB) *volume {
	t.Helper()
	testenv.RequireFUSE(t)
	mk, err := crypto.RandomMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	v := &volume{t: t, backing: filepath.Join(t.TempDir(), "backing")}
	if err := os.Mkdir(v.backing, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := backing.WithRoot(v.backing, func(root *backing.Dir) (err error) {
		_, v.keys, err = backing.InitVolume(root, crypto.StaticKey{Key: mk}, "vol", map[string]string{"uid": "1000"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// mount mounts the backing folder at with the volume's keys until the
// returned function unmounts it (also at the end of the test).
func mount(t testing.TB, backingDir string, keys *crypto.VolumeKeys) (string, func()) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := cryptfs.Mount(backingDir, mnt, keys, cryptfs.Options{FsName: "securevol-archive-test"})
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("FUSE mount failed: %v", err))
	}
	var done *fuse.Server = srv
	unmount := func() {
		if done == nil {
			return
		}
		var err error
		for range 50 {
			if err = done.Unmount(); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		done = nil
	}
	t.Cleanup(unmount)
	return mnt, unmount
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// populate writes through the mount every kind of entry a volume holds.
func populate(t testing.TB, mnt string) {
	t.Helper()
	p := func(elem ...string) string { return filepath.Join(append([]string{mnt}, elem...)...) }
	must(t, os.MkdirAll(p("dir", "sub", "deeper"), 0o755))
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1<<20 + 3, 3 << 20} {
		must(t, os.WriteFile(p("dir", fmt.Sprintf("file-%d", n)), randomBytes(t, n), 0o644))
	}
	must(t, os.WriteFile(p("dir", "sub", "deeper", "plain.txt"), []byte("the plaintext nobody may see\n"), 0o600))
	// A sparse file: holes before, between and after data.
	f, err := os.Create(p("sparse"))
	must(t, err)
	_, err = f.WriteAt(randomBytes(t, 10000), 5<<20)
	must(t, err)
	_, err = f.WriteAt([]byte("x"), 9<<20)
	must(t, err)
	must(t, f.Truncate(12<<20))
	must(t, f.Close())
	long := strings.Repeat("L", 255)
	must(t, os.WriteFile(p("dir", long), []byte("long name"), 0o640))
	must(t, os.Mkdir(p(strings.Repeat("D", 255)), 0o700))
	must(t, os.Symlink("short/target", p("link")))
	must(t, os.Symlink(strings.Repeat("t/", 2000), p("dir", "longlink")))
	must(t, os.Link(p("dir", "file-4096"), p("dir", "sub", "hardlink")))
	must(t, unix.Mkfifo(p("fifo"), 0o640))
	must(t, unix.Mknod(p("dir", "sock"), unix.S_IFSOCK|0o600, 0))
	must(t, unix.Mknod(p("dir", "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	must(t, unix.Setxattr(p("dir", "file-1"), "user.color", []byte("blue"), 0))
	must(t, unix.Setxattr(p("dir"), "user.dir", bytes.Repeat([]byte{0, 1, 2}, 100), 0))
	must(t, unix.Setxattr(mnt, "user.top", []byte("root attr"), 0))
	must(t, os.Chmod(p("dir", "file-0"), 0o4755))
	must(t, os.Lchown(p("dir", "file-1"), 1234, 5678))
	must(t, os.Lchown(p("link"), 42, 43))
	// Times last, deepest first, so that nothing changes them afterwards.
	ts := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for _, e := range []string{"dir/file-1", "sparse", "dir/sub/deeper", "dir/sub", "dir", "."} {
		must(t, os.Chtimes(p(e), ts, ts))
		ts = ts.Add(time.Hour + time.Nanosecond)
	}
	must(t, unix.Lutimes(p("link"), []unix.Timeval{{Sec: 1e9}, {Sec: 1e9, Usec: 5}}))
}

// node is what a tree comparison looks at for one entry.
type node struct {
	Mode         uint32
	Uid, Gid     uint32
	Size         int64
	Mtime        string
	Nlink        uint32
	Rdev         uint64
	Target       string
	Content      string // sha256
	Xattrs       string
	Blocks512Max int64 `json:"-"` // allocated size, for sparse files
}

// snapshot describes every entry below root, which is walked without
// following links.
func snapshot(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		n := node{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Nlink: uint32(st.Nlink),
			Mtime: fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec), Blocks512Max: st.Blocks}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			n.Content = hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			n.Target, _ = os.Readlink(path)
		case unix.S_IFCHR, unix.S_IFBLK:
			n.Rdev = st.Rdev
		}
		if m := st.Mode & unix.S_IFMT; m == unix.S_IFREG || m == unix.S_IFDIR {
			n.Xattrs = xattrs(t, path)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			n.Size, n.Blocks512Max = 0, 0 // depends on the file system's history
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// xattrs lists the user attributes of path with their values, sorted.
func xattrs(t testing.TB, path string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		val := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", path, name, err)
		}
		out = append(out, name+"="+hex.EncodeToString(val[:k]))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// compareTrees fails t for every difference between two snapshots.
func compareTrees(t testing.TB, what string, want, got map[string]node) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: %s missing", what, p)
			continue
		}
		w.Blocks512Max, g.Blocks512Max = 0, 0
		if w != g {
			t.Errorf("%s: %s differs:\nwant %+v\n got %+v", what, p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s is extra", what, p)
		}
	}
}

// writeLayout writes the backing folder at path into a new layout.
func writeLayout(t testing.TB, path string, opts WriteOptions) (string, *Summary) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	var s *Summary
	must(t, backing.WithRoot(path, func(root *backing.Dir) (err error) {
		s, err = Write(root, dir, opts)
		return err
	}))
	return dir, s
}

// restoreInto restores the layout into a new empty folder.
func restoreInto(t testing.TB, dir string) (string, *Summary, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "restored")
	must(t, os.Mkdir(dst, 0o700))
	var s *Summary
	err := backing.WithRoot(dst, func(root *backing.Dir) (err error) {
		s, err = Restore(dir, root)
		return err
	})
	return dst, s, err
}

// readAll reads a file or fails the test.
func readAll(t testing.TB, r io.Reader) []byte {
	b, err := io.ReadAll(r)
	must(t, err)
	return b
}
