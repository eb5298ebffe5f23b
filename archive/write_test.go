package archive

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// TestWriteSkipsForeignNames: names securevol never makes (a leftover of
// an interrupted header write, something planted) are not part of the
// volume: Write leaves them out and the archive restores.
func TestWriteSkipsForeignNames(t *testing.T) {
	v := newVolume(t)
	must(t, os.WriteFile(filepath.Join(v.backing, ".tmp-securevol.conf-0123"), []byte("x"), 0o600))
	must(t, os.WriteFile(filepath.Join(v.backing, "notes.txt"), []byte("x"), 0o600))
	must(t, os.Symlink("/etc/passwd", filepath.Join(v.backing, "evil link")))
	dir, s := writeLayout(t, v.backing, WriteOptions{})
	if s.Files != 3 { // the top, its IV and the header
		t.Errorf("%d entries, want 3", s.Files)
	}
	dst, _, err := restoreInto(t, dir)
	must(t, err)
	assertOnly(t, dst, crypto.HeaderName, crypto.DirIVName)
}

// TestWriteRefuses: what Restore would refuse, Write does not archive,
// and it leaves nothing behind.
func TestWriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, root string)
		want  error
	}{
		{"FIFO as the top's IV", func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, crypto.DirIVName)))
			must(t, unix.Mkfifo(filepath.Join(root, crypto.DirIVName), 0o644))
		}, ErrUnsupported},
		{"oversized long-name sidecar", func(t *testing.T, root string) {
			must(t, os.WriteFile(filepath.Join(root, crypto.LongNamePrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"+crypto.LongNameSuffix),
				make([]byte, maxSidecar+1), 0o400))
		}, ErrUnsupported},
		{"no header", func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, crypto.HeaderName)))
		}, backing.ErrNoHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(t)
			tc.plant(t, v.backing)
			dir := filepath.Join(t.TempDir(), "layout")
			err := backing.WithRoot(v.backing, func(root *backing.Dir) error {
				_, err := Write(root, dir, WriteOptions{})
				return err
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("Write: %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("Write left %s behind", dir)
			}
		})
	}
}

// TestNotEmpty: Write and Unpack want a new or empty directory, Restore
// an empty folder.
func TestNotEmpty(t *testing.T) {
	v := newVolume(t)
	full := t.TempDir()
	must(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o600))
	err := backing.WithRoot(v.backing, func(root *backing.Dir) error {
		_, err := Write(root, full, WriteOptions{})
		return err
	})
	if !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Write into a full directory: %v", err)
	}
	if _, err := Unpack(nil, full); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Unpack into a full directory: %v", err)
	}
	dir, _ := writeLayout(t, v.backing, WriteOptions{})
	err = backing.WithRoot(full, func(root *backing.Dir) error {
		_, err := Restore(dir, root)
		return err
	})
	if !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Restore into a full folder: %v", err)
	}
	assertOnly(t, full, "x")
}
