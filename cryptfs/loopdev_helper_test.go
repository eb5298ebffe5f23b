package cryptfs

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/testenv"
)

// Real block devices for tests: loop devices over scratch files, and ext4
// file systems on them to compare securevol's behaviour with.

// attachLoop attaches a loop device to file and detaches it when the test
// ends; it returns the device's path.
func attachLoop(t testing.TB, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("no loop device (losetup: %v: %s)", err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// scratchLoop is a loop device over a 1 MiB scratch file of known
// content. It returns the device number and a check that says what
// changed in the scratch file ("" if nothing).
func scratchLoop(t *testing.T) (uint64, func() string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "scratch.img")
	content := pattern(11, 1<<20)
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(content)
	dev := attachLoop(t, file)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	check := func() string {
		// The loop device writes through the page cache of the file.
		exec.Command("blockdev", "--flushbufs", dev).Run()
		b, err := os.ReadFile(file)
		if err != nil {
			return err.Error()
		}
		if sha256.Sum256(b) != want {
			return fmt.Sprintf("scratch file %s behind %s changed", file, dev)
		}
		return ""
	}
	return st.Rdev, check
}

// newExt4 makes an ext4 file system in a 64 MiB image (with 4 KiB blocks
// like a real disk: a small image would get 1 KiB blocks and 1023-byte
// symlink targets at most), mounts it nodev
// like the FUSE mount, and returns the mountpoint; it is unmounted when
// the test ends.
func newExt4(t testing.TB) string {
	t.Helper()
	testenv.RequireFUSE(t) // root, and the same skip rules as the mount it is compared with
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256", img).CombinedOutput(); err != nil {
		testenv.Missing(t, fmt.Sprintf("mkfs.ext4: %v: %s", err, out))
	}
	dev := attachLoop(t, img)
	mnt := filepath.Join(t.TempDir(), "ext4")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		testenv.Missing(t, fmt.Sprintf("mount ext4: %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}
