package cryptfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixExcluded names the go-fuse posixtest cases that are not run here,
// and why; each has a test of our own for what we do instead.
var posixExcluded = map[string]string{
	// Expects a second descriptor of the same process to be refused a
	// classic POSIX lock. POSIX locks belong to the process, so that only
	// happens on filesystems that turn them into OFD locks on separate
	// backing descriptors; the kernel handles our locks itself (right for
	// one host). go-fuse's own run of the suite skips it too.
	"FcntlFlockLocksFile": "POSIX locks of one process never conflict",
	// Sets an 8 KiB xattr: the backing ext4 keeps all of a file's
	// xattrs in one 4 KiB block, so the case would skip itself.
	// TestLargeXattrRefused checks the error instead.
	"XAttrLarge": "backing ext4 holds at most 4 KiB of xattrs per file",
}

// TestPosix runs go-fuse's POSIX conformance suite, each case on a fresh
// mount.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if why, ok := posixExcluded[name]; ok {
			t.Logf("%s not run: %s", name, why)
			continue
		}
		t.Run(name, func(t *testing.T) {
			m := newTestMount(t)
			posixtest.All[name](t, m.dir)
		})
	}
}

// TestLargeXattrRefused: a value the backing file system cannot hold is
// refused with a clear errno and leaves the file's other attributes alone.
func TestLargeXattrRefused(t *testing.T) {
	m := newTestMount(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.small", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	err := unix.Setxattr(p, "user.large", make([]byte, 8<<10), 0)
	if err != unix.ENOSPC && err != unix.E2BIG {
		t.Fatalf("8 KiB xattr: %v, want ENOSPC or E2BIG", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "user.small", buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Fatalf("user.small after a refused large xattr: %q, %v", buf[:n], err)
	}
}

// TestTmpfileLinkedIntoPlace: an O_TMPFILE file is encrypted like any
// other and can be given a name later through its descriptor.
func TestTmpfileLinkedIntoPlace(t *testing.T) {
	m := newTestMount(t)
	fd, err := unix.Open(m.dir, unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	data := []byte(strings.Repeat("tmpfile-marker ", 700))
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, m.path("named"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("link the tmpfile into place: %v", err)
	}
	got, err := os.ReadFile(m.path("named"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	filepath.Walk(m.backing, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "tmpfile-marker") {
				t.Errorf("plaintext in backing file %s", p)
			}
		}
		return nil
	})
}
