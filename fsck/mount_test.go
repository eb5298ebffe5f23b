package fsck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// mountTree initialises a backing folder, mounts it, runs fill on the
// plaintext and unmounts it, so the tree holds exactly what cryptfs
// writes.
func mountTree(t *testing.T, fill func(mnt string)) (backingDir string, keys *crypto.VolumeKeys) {
	t.Helper()
	testenv.RequireFUSE(t)
	backingDir, mnt := filepath.Join(t.TempDir(), "backing"), filepath.Join(t.TempDir(), "mnt")
	for _, d := range []string{backingDir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk, _ := crypto.RandomMasterKey()
	keys, _, err := initDir(backingDir, crypto.StaticKey{Key: mk})
	if err != nil {
		t.Fatal(err)
	}
	logger, _ := logtest.NewNullLogger()
	srv, err := cryptfs.Mount(backingDir, mnt, keys, cryptfs.Options{Log: logrus.NewEntry(logger), FsName: "securevol-test"})
	if err != nil {
		testenv.Missing(t, "FUSE mount failed: "+err.Error())
	}
	mounted := true
	unmount := func() {
		for i := 0; mounted && i < 50; i++ {
			if srv.Unmount() == nil {
				mounted = false
				return
			}
			time.Sleep(20 * time.Millisecond) // a file still being closed
		}
		if mounted {
			unix.Unmount(mnt, unix.MNT_DETACH)
			mounted = false
			t.Errorf("unmount %s failed; detached", mnt)
		}
	}
	t.Cleanup(unmount)
	fill(mnt)
	unmount()
	return backingDir, keys
}

// TestTreeMadeThroughMount: everything cryptfs stores (files, long names,
// symlinks, FIFOs, sockets, xattrs on files, directories and the root, a
// deep tree) checks clean.
func TestTreeMadeThroughMount(t *testing.T) {
	root, keys := mountTree(t, func(mnt string) {
		deep := mnt
		for range deepTreeDepth {
			deep = filepath.Join(deep, "d")
		}
		must(t, os.MkdirAll(deep, 0o755))
		must(t, os.WriteFile(filepath.Join(deep, "file"), []byte(strings.Repeat("x", 3*crypto.BlockSize+7)), 0o644))
		must(t, os.WriteFile(filepath.Join(mnt, "empty"), nil, 0o644))
		must(t, os.WriteFile(filepath.Join(mnt, strings.Repeat("long name ", 25)), []byte("long"), 0o644))
		must(t, os.Symlink("d/d/file", filepath.Join(mnt, "link")))
		must(t, unix.Mkfifo(filepath.Join(mnt, "fifo"), 0o644))
		must(t, unix.Mknod(filepath.Join(mnt, "d", "socket"), unix.S_IFSOCK|0o644, 0))
		for _, p := range []string{mnt, filepath.Join(mnt, "d"), filepath.Join(deep, "file")} {
			must(t, unix.Setxattr(p, "user.note", []byte("value of "+filepath.Base(p)), 0))
		}
	})
	rep, ps := checkWithin(t, keys, root)
	if len(ps) != 0 {
		t.Fatalf("problems in a tree made through the mount: %v", ps)
	}
	want := Report{Dirs: deepTreeDepth + 1, Files: 3, Symlinks: 1, Specials: 2, Blocks: 4 + 1}
	if rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}

	// The root's attributes are checked too (it has no parent to name it in).
	names := make([]byte, 1024)
	n, err := unix.Listxattr(root, names)
	must(t, err)
	var name string
	for _, x := range strings.Split(string(names[:n]), "\x00") {
		if strings.HasPrefix(x, crypto.XattrPrefix) {
			name = x
		}
	}
	val := make([]byte, 1024)
	m, err := unix.Getxattr(root, name, val)
	must(t, err)
	val[m-1] ^= 1
	must(t, unix.Setxattr(root, name, val[:m], 0))
	_, ps = checkWithin(t, keys, root)
	if len(ps) != 1 || ps[0].Backing != "/" {
		t.Fatalf("problems %v, want one, on the root", ps)
	}
	wantProblem(t, ps, "xattr")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
