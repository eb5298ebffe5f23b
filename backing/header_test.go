package backing

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

func TestVolumeLifecycle(t *testing.T) {
	root, path := openTestRoot(t)
	k1, _ := crypto.RandomMasterKey()
	k2, _ := crypto.RandomMasterKey()
	ks, other := crypto.StaticKey{Key: k1}, crypto.StaticKey{Key: k2}
	h, _, err := InitVolume(root, ks, "vol", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := InitVolume(root, ks, "vol", nil); err == nil {
		t.Fatal("InitVolume on a used folder succeeded")
	}
	fi, err := os.Stat(filepath.Join(path, crypto.HeaderName))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("header: %v %v", fi, err)
	}
	iv, err := ReadDirIV(root)
	if err != nil || len(iv) != crypto.DirIVSize {
		t.Fatalf("root IV: %v", err)
	}
	if _, _, err := OpenVolume(root, other); !errors.Is(err, crypto.ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	h2, _, err := OpenVolume(root, ks)
	if err != nil || h2.ID != h.ID {
		t.Fatalf("open: %v", err)
	}
	if err := Rewrap(root, ks, other); err != nil {
		t.Fatal(err)
	}
	if err := Rewrap(root, ks, other); err != nil {
		t.Fatalf("resumed rewrap: %v", err)
	}
	if _, _, err := OpenVolume(root, ks); !errors.Is(err, crypto.ErrWrongKey) {
		t.Fatalf("old key after rewrap: %v", err)
	}
	if _, _, err := OpenVolume(root, other); err != nil {
		t.Fatalf("new key after rewrap: %v", err)
	}
	if err := DestroyKey(root); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHeader(root); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("after DestroyKey: %v", err)
	}
	if err := DestroyKey(root); err != nil {
		t.Fatalf("DestroyKey without header: %v", err)
	}
}

// within fails the test if fn does not return within a few seconds (a
// FIFO or device that blocked the read).
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- fn() }()
	select {
	case err := <-res:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s hangs", what)
		return nil
	}
}

// plant puts something other than a header at the header's name.
var plants = []struct {
	name string
	make func(t *testing.T, dir, name string, o *outside)
	want error
}{
	{"symlink", func(t *testing.T, dir, name string, o *outside) {
		mustOK(t, os.Symlink(o.path, filepath.Join(dir, name)))
	}, ErrNotRegular},
	{"fifo", func(t *testing.T, dir, name string, _ *outside) {
		mustOK(t, unix.Mkfifo(filepath.Join(dir, name), 0o600))
	}, ErrNotRegular},
	{"dev-zero", func(t *testing.T, dir, name string, _ *outside) {
		mustOK(t, unix.Mknod(filepath.Join(dir, name), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))))
	}, ErrNotRegular},
	{"directory", func(t *testing.T, dir, name string, _ *outside) { mustOK(t, os.Mkdir(filepath.Join(dir, name), 0o700)) }, ErrNotRegular},
	{"huge", func(t *testing.T, dir, name string, _ *outside) {
		mustOK(t, os.WriteFile(filepath.Join(dir, name), nil, 0o600))
		mustOK(t, os.Truncate(filepath.Join(dir, name), 1<<40))
	}, ErrTooLarge},
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadHeaderRefusesPlants(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (mknod)")
	}
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			root, path := openTestRoot(t)
			o := newOutside(t)
			p.make(t, path, crypto.HeaderName, o)
			err := within(t, "ReadHeader", func() error { _, err := ReadHeader(root); return err })
			if !errors.Is(err, p.want) || !errors.Is(err, unix.EIO) {
				t.Fatalf("ReadHeader = %v, want %v", err, p.want)
			}
			p.make(t, path, "iv-plant", o)
			mustOK(t, unix.Renameat(root.Fd(), "iv-plant", root.Fd(), crypto.DirIVName))
			if _, err := ReadDirIV(root); err == nil {
				t.Fatal("ReadDirIV accepted a planted entry")
			}
			o.check(t, "ReadHeader")
		})
	}
}

// A header holding another file's bytes (say, a secret) is refused
// without quoting them.
func TestReadHeaderNeverQuotes(t *testing.T) {
	root, path := openTestRoot(t)
	for _, content := range []string{"SECRET-PASSWORD", `{"SECRET-PASSWORD": 1}`, `{"format": "SECRET-PASSWORD"}`, `{"id": "SECRET-PASSWORD"}`} {
		mustOK(t, os.WriteFile(filepath.Join(path, crypto.HeaderName), []byte(content), 0o600))
		_, err := ReadHeader(root)
		if !errors.Is(err, crypto.ErrMalformedHeader) || strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("ReadHeader(%s) = %v", content, err)
		}
	}
}

func TestReadDirIVSize(t *testing.T) {
	root, path := openTestRoot(t)
	for _, n := range []int{0, crypto.DirIVSize - 1, crypto.DirIVSize + 1} {
		mustOK(t, os.WriteFile(filepath.Join(path, crypto.DirIVName), make([]byte, n), 0o600))
		if _, err := ReadDirIV(root); err == nil {
			t.Fatalf("ReadDirIV accepted %d bytes", n)
		}
	}
	mustOK(t, root.Unlink(crypto.DirIVName))
	iv, err := CreateDirIV(root)
	mustOK(t, err)
	got, err := ReadDirIV(root)
	if err != nil || string(got) != string(iv) {
		t.Fatalf("ReadDirIV after CreateDirIV: %v", err)
	}
}

// DestroyKey writes only a regular header: a planted symlink (say, to the
// master key file), FIFO or device is unlinked and its target untouched.
func TestDestroyKeyNeverFollows(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (mknod)")
	}
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			root, path := openTestRoot(t)
			o := newOutside(t)
			p.make(t, path, crypto.HeaderName, o)
			if err := within(t, "DestroyKey", func() error { return DestroyKey(root) }); err != nil {
				t.Fatal(err)
			}
			o.check(t, "DestroyKey")
			var st unix.Statx_t
			err := root.Lstat(crypto.HeaderName, &st)
			switch {
			case p.name == "directory" && err != nil:
				t.Fatal("a directory at the header's name was removed; it is for the caller's delete")
			case p.name != "directory" && !errors.Is(err, unix.ENOENT):
				t.Fatalf("the planted %s is still there: %v", p.name, err)
			}
		})
	}
}

// DestroyKey zeroes the header's blocks before unlinking it: a descriptor
// opened before (standing for the disk's blocks) then reads no key. (A
// second hard link would not do: a header with other links is not ours
// alone and is left as it is; see TestDestroyKeyLeavesSharedHeader.)
func TestDestroyKeyZeroes(t *testing.T) {
	root, path := openTestRoot(t)
	k, _ := crypto.RandomMasterKey()
	_, _, err := InitVolume(root, crypto.StaticKey{Key: k}, "", nil)
	mustOK(t, err)
	spy, err := os.Open(filepath.Join(path, crypto.HeaderName))
	mustOK(t, err)
	defer spy.Close()
	mustOK(t, DestroyKey(root))
	b, err := io.ReadAll(spy)
	mustOK(t, err)
	if len(b) == 0 || strings.Trim(string(b), "\x00") != "" {
		t.Fatalf("header not zeroed: %q", b)
	}
}

// A header with a second link may be a file outside the folder (the master
// key, say): DestroyKey removes its own name and writes nothing.
func TestDestroyKeyLeavesSharedHeader(t *testing.T) {
	root, path := openTestRoot(t)
	k, _ := crypto.RandomMasterKey()
	_, _, err := InitVolume(root, crypto.StaticKey{Key: k}, "", nil)
	mustOK(t, err)
	other := filepath.Join(t.TempDir(), "other")
	mustOK(t, os.Link(filepath.Join(path, crypto.HeaderName), other))
	before, err := os.ReadFile(other)
	mustOK(t, err)
	mustOK(t, DestroyKey(root))
	after, err := os.ReadFile(other)
	mustOK(t, err)
	if string(after) != string(before) {
		t.Fatal("DestroyKey wrote through a header with another link")
	}
	var st unix.Statx_t
	if err := root.Lstat(crypto.HeaderName, &st); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("the header name is still there: %v", err)
	}
}
