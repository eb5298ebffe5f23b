package cryptfs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAttackSwappedXattr: the sealed value of an extended attribute is
// copied from one backing file to another under the same (encrypted)
// name. Reading it through the second file must fail with EIO: a value
// is bound to its file, not only to its name.
func TestAttackSwappedXattr(t *testing.T) {
	m := newTestMount(t)
	for name, value := range map[string]string{"A": "value of A", "B": "value of B"} {
		if err := os.WriteFile(m.path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(m.path(name), "user.k", []byte(value), 0); err != nil {
			t.Fatal(err)
		}
	}
	backA, backB := m.backingOf("A"), m.backingOf("B")
	xname, err := m.keys.EncryptXattrName("user.k")
	if err != nil {
		t.Fatal(err)
	}
	m.offline(func() {
		buf := make([]byte, 4096)
		n, err := unix.Getxattr(backA, xname, buf)
		if err != nil {
			t.Fatalf("backing xattr %s of A: %v", xname, err)
		}
		if err := unix.Setxattr(backB, xname, buf[:n], 0); err != nil {
			t.Fatal(err)
		}
	})
	buf := make([]byte, 256)
	n, err := unix.Getxattr(m.path("B"), "user.k", buf)
	if err == nil && string(buf[:n]) == "value of A" {
		t.Fatal("B shows A's xattr value: values are not bound to their file")
	}
	if err != unix.EIO {
		t.Errorf("getxattr of B's swapped value: %q, %v; want EIO", buf[:max(n, 0)], err)
	}
	n, err = unix.Getxattr(m.path("A"), "user.k", buf)
	if err != nil || string(buf[:n]) != "value of A" {
		t.Errorf("A's own value: %q, %v", buf[:max(n, 0)], err)
	}
}
