package cryptfs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/internal/testenv"
)

// newExt2 makes an ext2 file system with 128-byte inodes, which have no
// room for a birth time, mounts it and returns the mountpoint; it is
// unmounted when the test ends.
func newExt2(t *testing.T) string {
	t.Helper()
	testenv.RequireFUSE(t)
	img := filepath.Join(t.TempDir(), "ext2.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext2", "-q", "-F", "-b", "4096", "-I", "128", img).CombinedOutput(); err != nil {
		testenv.Missing(t, fmt.Sprintf("mkfs.ext2: %v: %s", err, out))
	}
	dev := attachLoop(t, img)
	mnt := filepath.Join(t.TempDir(), "ext2")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext2", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		testenv.Missing(t, fmt.Sprintf("mount ext2: %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// releasedBefore makes the cleanups registered later (a mount on dir)
// finish letting go of dir before the ones registered earlier (the
// unmount of dir) run: the FUSE server closes its backing descriptors
// shortly after it is unmounted, not before.
func releasedBefore(t *testing.T, dir string) {
	t.Cleanup(func() {
		for i := 0; i < 100 && holdsUnder(dir); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// holdsUnder reports whether this process has a descriptor open below dir.
func holdsUnder(dir string) bool {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}

func statxAt(t *testing.T, dirfd int, name string) unix.Statx_t {
	t.Helper()
	var st unix.Statx_t
	if err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// Without birth time, the generation still tells apart two files that
// had one inode number, and stays put for one file whatever happens to it
// and however it is reached.
func TestGenWithoutBirthTime(t *testing.T) {
	dir := newExt2(t)
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	mk := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("a")
	st := statxAt(t, dfd, "a")
	if st.Mask&unix.STATX_BTIME != 0 {
		t.Fatalf("ext2 with 128-byte inodes reports a birth time (%v): the test needs a file system without", st.Btime)
	}
	d, err := backing.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	g := gen(func() ([]byte, error) { return d.Handle("a") }, &st)
	if g == 1 {
		t.Fatal("no generation from the file handle")
	}
	fd, err := unix.Open(filepath.Join(dir, "a"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := gen(func() ([]byte, error) { return backing.FileHandle(fd) }, &st); got != g {
		t.Errorf("through a descriptor: generation %d, by name %d", got, g)
	}
	unix.Close(fd)
	if err := os.Chmod(filepath.Join(dir, "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "a"), []byte("changed"), 0o600)
	if st2 := statxAt(t, dfd, "a"); gen(func() ([]byte, error) { return d.Handle("a") }, &st2) != g {
		t.Error("generation changed with chmod and a write")
	}
	os.Remove(filepath.Join(dir, "a"))
	mk("b")
	stb := statxAt(t, dfd, "b")
	if stb.Ino != st.Ino {
		t.Fatalf("ext2 gave the new file inode %d, not the freed %d: nothing shown", stb.Ino, st.Ino)
	}
	if gen(func() ([]byte, error) { return d.Handle("b") }, &stb) == g {
		t.Error("a new file with a reused inode number got the old file's generation")
	}
}

// A file removed while the kernel still holds its inode (here through an
// O_PATH descriptor, which opens nothing in the backing folder) keeps its
// node, with its cipher. A file that then appears in the backing folder
// with the same inode number (on a backing file system without birth
// time; here a copy of another encrypted file put there by hand, as from
// a backup) must get a node of its own when looked up, not that one:
// read with the removed file's cipher it would fail, or be written with
// it.
func TestReusedInodeNumber(t *testing.T) {
	for _, fsys := range []struct {
		name string
		dir  func(t *testing.T) string
	}{{"ext2", newExt2}, {"ext4", func(t *testing.T) string { return newExt4(t) }}} {
		t.Run(fsys.name, func(t *testing.T) {
			dir := fsys.dir(t)
			releasedBefore(t, dir)
			m := newTestMountIn(t, dir)
			b := pattern(2, 6000)
			if err := os.WriteFile(m.path("b"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			stored, err := os.ReadFile(m.backingOf("b"))
			if err != nil {
				t.Fatal(err)
			}
			reused := false
			for i := 0; i < 10 && !reused; i++ {
				old, nu := fmt.Sprint("old", i), fmt.Sprint("new", i)
				if err := os.WriteFile(m.path(old), pattern(i, 5000), 0o644); err != nil {
					t.Fatal(err)
				}
				ino := m.backingIno(old)
				fd, err := unix.Open(m.path(old), unix.O_PATH, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(m.path(old)); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(m.backing, m.backingNameFor(m.backing, nu)), stored, 0o644); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(m.path(nu))
				reused = m.backingIno(nu) == ino
				unix.Close(fd)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("a file with the inode number of a removed one that is still known (reused: %v): %d bytes, %v", reused, len(got), err)
				}
			}
			if !reused && fsys.name == "ext2" {
				t.Fatal("ext2 never reused an inode number: nothing shown")
			}
		})
	}
}

// backingIno is the backing inode number of the plaintext entry name in
// the root.
func (m *testMount) backingIno(name string) uint64 {
	m.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(m.path(name), &st); err != nil {
		m.t.Fatal(err)
	}
	return st.Ino
}
