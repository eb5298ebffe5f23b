package cryptfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// offline unmounts, runs fn on the backing folder and mounts again, so no
// cached plaintext survives the tampering.
func (m *testMount) offline(fn func()) {
	m.t.Helper()
	m.unmount()
	fn()
	m.mount()
}

// backingOf returns the backing path of a plaintext file in the root.
func (m *testMount) backingOf(name string) string {
	m.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(m.path(name), &st); err != nil {
		m.t.Fatal(err)
	}
	var found string
	filepath.Walk(m.backing, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Sys().(*syscall.Stat_t).Ino == st.Ino {
			found = p
		}
		return nil
	})
	if found == "" {
		m.t.Fatalf("no backing file for %s", name)
	}
	return found
}

func patchFile(t *testing.T, p string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// preadDirect reads n bytes at off bypassing the page cache, so exactly
// the blocks asked for are decrypted.
func preadDirect(t *testing.T, p string, n int, off int64) ([]byte, error) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, n)
	k, err := unix.Pread(fd, buf, off)
	if err != nil {
		return nil, err
	}
	return buf[:k], nil
}

func TestTamperContent(t *testing.T) {
	m := newTestMount(t)
	const size = 3*4096 + 5
	content := pattern(1, size)
	for _, name := range []string{"flip", "header", "version", "swap", "cut"} {
		if err := os.WriteFile(m.path(name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	back := map[string]string{}
	for _, name := range []string{"flip", "header", "version", "swap", "cut"} {
		back[name] = m.backingOf(name)
	}
	m.offline(func() {
		patchFile(t, back["flip"], func(b []byte) []byte { b[crypto.BlockOffset(1)+100] ^= 1; return b })
		patchFile(t, back["header"], func(b []byte) []byte { b[7] ^= 0x80; return b })
		patchFile(t, back["version"], func(b []byte) []byte { b[1] ^= 1; return b })
		patchFile(t, back["swap"], func(b []byte) []byte {
			b0 := append([]byte(nil), b[crypto.BlockOffset(0):crypto.BlockOffset(1)]...)
			copy(b[crypto.BlockOffset(0):], b[crypto.BlockOffset(1):crypto.BlockOffset(2)])
			copy(b[crypto.BlockOffset(1):], b0)
			return b
		})
		patchFile(t, back["cut"], func(b []byte) []byte { return b[:len(b)-3] })
	})
	for _, name := range []string{"flip", "header", "version", "swap", "cut"} {
		if _, err := os.ReadFile(m.path(name)); !isErrno(err, syscall.EIO) {
			t.Errorf("%s: read gave %v, want EIO", name, err)
		}
	}
	// Blocks that are intact still read; the damaged one does not.
	if b, err := preadDirect(t, m.path("flip"), 4096, 0); err != nil || !bytes.Equal(b, content[:4096]) {
		t.Errorf("intact block 0: %v", err)
	}
	if b, err := preadDirect(t, m.path("flip"), 4096, 2*4096); err != nil || !bytes.Equal(b, content[2*4096:3*4096]) {
		t.Errorf("intact block 2: %v", err)
	}
	if _, err := preadDirect(t, m.path("flip"), 4096, 4096); !isErrno(err, syscall.EIO) {
		t.Errorf("damaged block 1: %v, want EIO", err)
	}
	// The log names the backing file and block, never the plaintext name.
	rel, _ := filepath.Rel(m.backing, back["flip"])
	found := false
	for _, e := range m.loggedContaining("block failed authentication") {
		if e.Data["path"] == rel && e.Data["block"] == int64(1) {
			found = true
		}
		for _, v := range e.Data {
			if s, ok := v.(string); ok && strings.Contains(s, "flip") {
				t.Errorf("log entry shows a plaintext name: %v", e.Data)
			}
		}
	}
	if !found {
		t.Errorf("no log entry for block 1 of %s; got %v", rel, m.logs.AllEntries())
	}
	if len(m.loggedContaining("file header failed authentication")) == 0 {
		t.Error("corrupt header not logged")
	}
	// Writing into a damaged block is refused too: it would need the
	// old plaintext.
	f, err := os.OpenFile(m.path("flip"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), 4096+10); !isErrno(err, syscall.EIO) {
		t.Errorf("partial write into damaged block: %v, want EIO", err)
	}
}

func TestTamperNames(t *testing.T) {
	m := newTestMount(t)
	long := strings.Repeat("L", 200)
	for _, name := range []string{"keep", "victim", long} {
		if err := os.WriteFile(m.path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("somewhere", m.path("link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.path("keep"), "user.x", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	victim, longBack, link, keep := m.backingOf("victim"), m.backingOf(long), m.backingOf("link"), m.backingOf("keep")
	iv, err := os.ReadFile(filepath.Join(m.backing, crypto.DirIVName))
	if err != nil {
		t.Fatal(err)
	}
	m.offline(func() {
		// Change one character of the encrypted name, choosing one that
		// does not happen to decrypt to some other valid name.
		dir, base := filepath.Split(victim)
		var bad string
		for i := len(base) / 2; i < len(base); i++ {
			c := []byte(base)
			c[i] = "AB"[(c[i]+1)%2]
			if c[i] == base[i] {
				c[i] = 'C'
			}
			if _, err := m.keys.DecryptName(string(c), iv); err != nil {
				bad = string(c)
				break
			}
		}
		if err := os.Rename(victim, filepath.Join(dir, bad)); err != nil {
			t.Fatal(err)
		}
		// A sidecar that does not belong to its long name.
		patchFile(t, crypto.LongNameSidecar(longBack), func(b []byte) []byte { b[10] ^= 1; return b })
		// A symlink target and an xattr value.
		target, _ := os.Readlink(link)
		os.Remove(link)
		os.Symlink(target[:len(target)-2]+"AA", link)
		names, _ := unix.Listxattr(keep, make([]byte, 0))
		buf := make([]byte, names)
		unix.Listxattr(keep, buf)
		xname := strings.TrimRight(string(buf), "\x00")
		val := make([]byte, 100)
		n, _ := unix.Getxattr(keep, xname, val)
		val[n-1] ^= 1
		unix.Setxattr(keep, xname, val[:n], 0)
	})
	got := listDir(t, m.dir)
	if !sameNames(got, []string{"keep", "link"}) {
		t.Errorf("listing %q, want only the intact entries", got)
	}
	if len(m.loggedContaining("name failed authentication")) < 2 {
		t.Errorf("tampered names not logged: %v", m.logs.AllEntries())
	}
	if _, err := os.Readlink(m.path("link")); !isErrno(err, syscall.EIO) {
		t.Errorf("tampered symlink: %v, want EIO", err)
	}
	if _, err := unix.Getxattr(m.path("keep"), "user.x", make([]byte, 100)); err != unix.EIO {
		t.Errorf("tampered xattr: %v, want EIO", err)
	}
	checkContent(t, m.path("keep"), []byte("keep"))
}

// TestNoPlaintext runs a workload that puts a marker in every kind of
// plaintext and then searches the backing folder for it: contents, names,
// symlink targets, xattr names and values.
func TestNoPlaintext(t *testing.T) {
	m := newTestMount(t)
	const marker = "PLAINTEXT-MARKER-q7Zx"
	mk := func(s string) string { return s + marker }
	big := bytes.Repeat([]byte(marker), 300000/len(marker))
	if err := os.MkdirAll(m.path(mk("dir"), mk("sub")), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		mk("small"):                                  []byte(marker),
		mk("dir") + "/" + mk("big"):                  big,
		mk("dir") + "/" + mk("sub") + "/" + "f":      []byte("prefix " + marker + " suffix"),
		strings.Repeat("n", 200) + marker:            []byte(marker),
		mk("dir") + "/" + strings.Repeat(marker, 10): []byte(marker),
	}
	for name, content := range files {
		if err := os.WriteFile(m.path(name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Overwrite mid-block and append, so re-sealed blocks are checked too.
	f, err := os.OpenFile(m.path(mk("small")), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(marker)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if f, err = os.OpenFile(m.path(mk("small")), os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(marker), 5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Truncate(m.path(mk("dir"), mk("big")), 12345)
	if err := os.Symlink(mk("target/"), m.path(mk("link"))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.path(mk("small")), "user."+marker, []byte(marker), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.path(mk("dir")), "user.x", []byte(mk("v")), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path(mk("small")), m.path(mk("renamed"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path(mk("renamed")), m.path(mk("dir"), mk("hardlink"))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(m.path(mk("fifo")), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount()

	checked := 0
	err = filepath.Walk(m.backing, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		checked++
		if strings.Contains(fi.Name(), marker) {
			t.Errorf("plaintext name in backing folder: %s", p)
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, []byte(marker)) {
				t.Errorf("plaintext content in %s", p)
			}
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			if strings.Contains(target, marker) {
				t.Errorf("plaintext symlink target in %s", p)
			}
		}
		if fi.Mode()&(os.ModeSymlink|os.ModeNamedPipe) == 0 {
			buf := make([]byte, 64<<10)
			n, _ := unix.Llistxattr(p, buf)
			for _, x := range strings.Split(string(buf[:n]), "\x00") {
				if x == "" {
					continue
				}
				if strings.Contains(x, marker) {
					t.Errorf("plaintext xattr name on %s", p)
				}
				v := make([]byte, 64<<10)
				k, _ := unix.Lgetxattr(p, x, v)
				if bytes.Contains(v[:max(k, 0)], []byte(marker)) {
					t.Errorf("plaintext xattr value on %s", p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 12 {
		t.Fatalf("only %d backing entries checked", checked)
	}
	// And the workload really is there when mounted.
	m.mount()
	want := []byte(marker + marker)
	copy(want[5:], marker)
	checkContent(t, m.path(mk("renamed")), want)
}
