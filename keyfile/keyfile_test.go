package keyfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

func TestGenerateAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 || st.Size() != crypto.KeySize {
		t.Fatalf("key file mode %v size %d", st.Mode(), st.Size())
	}
	before, _ := os.ReadFile(path)
	if err := GenerateKeyFile(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("existing key file overwritten: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("key changed")
	}
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := crypto.NewMasterKey(before)
	if !k.Equal(want) {
		t.Fatal("loaded another key")
	}
	if s := fmt.Sprintf("%v %+v %#v %s", k, k, k, k); strings.Contains(s, fmt.Sprintf("%x", before[:4])) || !strings.Contains(s, "redacted") {
		t.Fatalf("key leaks through formatting: %s", s)
	}
	// A symlink to the key is the administrator's choice, and fine.
	link := filepath.Join(t.TempDir(), "link.key")
	os.Symlink(path, link)
	if _, err := LoadKeyFile(link); err != nil {
		t.Fatalf("key through a symlink: %v", err)
	}
}

// Every refusal is a typed error with the path and a sentinel, and no
// command-line hint (the CLI adds those).
func TestRefusals(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (chown, mknod)")
	}
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	key := bytes.Repeat([]byte{7}, crypto.KeySize)
	for _, tc := range []struct {
		name string
		path func() string
		want error
	}{
		{"group-readable", func() string { return write("g.key", key, 0o640) }, ErrPerms},
		{"world-writable", func() string { return write("w.key", key, 0o602) }, ErrPerms},
		{"other owner", func() string {
			p := write("o.key", key, 0o600)
			os.Chown(p, 12345, 0)
			return p
		}, ErrOwner},
		{"short", func() string { return write("s.key", []byte("abc"), 0o600) }, ErrKeySize},
		{"directory", func() string { p := filepath.Join(dir, "d.key"); os.Mkdir(p, 0o700); return p }, ErrNotRegular},
		{"fifo", func() string { p := filepath.Join(dir, "f.key"); unix.Mkfifo(p, 0o600); return p }, ErrNotRegular},
		{"device", func() string {
			p := filepath.Join(dir, "zero.key")
			unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5)))
			return p
		}, ErrNotRegular},
		{"missing", func() string { return filepath.Join(dir, "none.key") }, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.path()
			done := make(chan error, 1)
			go func() { _, err := LoadKeyFile(p); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("LoadKeyFile hangs")
			}
			var kerr *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &kerr) || kerr.Path != p {
				t.Fatalf("LoadKeyFile = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "chmod") || strings.Contains(err.Error(), "securevol") {
				t.Fatalf("error carries a command-line hint: %v", err)
			}
			if tc.want != ErrKeySize {
				if _, err := ReadPassphraseFile(p); !errors.Is(err, tc.want) {
					t.Fatalf("ReadPassphraseFile = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

func TestPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"pass\n", "pass"}, {"pass\r\n", "pass"}, {"pass", "pass"}, {"two\nlines\n", "two\nlines"},
	} {
		p := filepath.Join(dir, "p")
		os.WriteFile(p, []byte(tc.content), 0o600)
		got, err := ReadPassphraseFile(p)
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadPassphraseFile(%q) = %q, %v", tc.content, got, err)
		}
	}
	p := filepath.Join(dir, "empty")
	os.WriteFile(p, []byte("\n"), 0o600)
	if _, err := ReadPassphraseFile(p); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty passphrase: %v", err)
	}
}

func TestWriteKeyFileReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	for _, b := range []byte{1, 2} {
		raw := bytes.Repeat([]byte{b}, crypto.KeySize)
		if err := WriteKeyFile(path, raw); err != nil {
			t.Fatal(err)
		}
		k, err := LoadKeyFile(path)
		if err != nil {
			t.Fatalf("the written key does not load: %v", err)
		}
		want, _ := crypto.NewMasterKey(raw)
		if !k.Equal(want) {
			t.Fatalf("round %d: another key loaded", b)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
