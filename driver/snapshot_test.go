package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// cpFolder copies the folder src into the open folder root, attributes
// and all (cp -a through root's descriptor), and answers ks.
func cpFolder(src string, ks crypto.KeySource) func(root *backing.Dir) (crypto.KeySource, error) {
	return func(root *backing.Dir) (crypto.KeySource, error) {
		dst := fmt.Sprintf("/proc/%d/fd/%d/", os.Getpid(), root.Fd())
		if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("cp: %v: %s", err, out)
		}
		return ks, nil
	}
}

// snapshot copies the volume name's folder to a new directory under
// Snapshot, and returns it with the header Snapshot gave.
func (e *env) snapshot(name string) (string, *crypto.Header) {
	e.t.Helper()
	dst := filepath.Join(e.t.TempDir(), "snap")
	var hdr *crypto.Header
	err := e.d.Snapshot(context.Background(), name, func(root *backing.Dir, h *crypto.Header, ks crypto.KeySource) error {
		hdr = h
		if _, err := h.Open(ks); err != nil {
			return err
		}
		src := fmt.Sprintf("/proc/%d/fd/%d/.", os.Getpid(), root.Fd())
		if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return dst, hdr
}

// volumeFolders lists what the volumes directory holds.
func (e *env) volumeFolders() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.stateDir, "volumes"))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, x := range ents {
		out = append(out, x.Name())
	}
	return out
}

// A mounted volume's snapshot, imported under another name, is a volume
// of its own: same contents and options, its own directory ID and name in
// its header, mountable next to the original.
func TestSnapshotImport(t *testing.T) {
	e := newEnv(t)
	e.create("src", map[string]string{"uid": "1000", "mode": "0750"})
	mp := e.mount("src", "c1")
	if err := os.WriteFile(filepath.Join(mp, "data"), []byte("contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, h := e.snapshot("src")
	if h.Name != "src" || h.ID != e.record("src").DirID {
		t.Fatalf("Snapshot gave the header of %q (%s)", h.Name, h.ID)
	}
	if err := e.d.Import("copy", cpFolder(snap, nil)); err != nil {
		t.Fatal(err)
	}
	rec, src := e.record("copy"), e.record("src")
	if rec.Options != src.Options || rec.DirID == src.DirID || rec.DirID == "" {
		t.Fatalf("imported record %+v, source %+v", rec, src)
	}
	ch, _, err := openVolumeAt(filepath.Join(e.stateDir, "volumes", rec.ID), crypto.StaticKey{Key: e.key})
	if err != nil || ch.Name != "copy" || ch.ID != rec.DirID {
		t.Fatalf("imported header: %+v, %v", ch, err)
	}
	cmp := e.mount("copy", "c2")
	if b, err := os.ReadFile(filepath.Join(cmp, "data")); err != nil || string(b) != "contents" {
		t.Fatalf("imported data: %q, %v", b, err)
	}
	st, err := os.Stat(cmp)
	if err != nil || st.Mode().Perm() != 0o750 {
		t.Fatalf("imported root: %v, %v", st.Mode(), err)
	}
	e.unmount("copy", "c2")
	e.unmount("src", "c1")
	// It survives a restart as it is: nothing to recover or report.
	e.close()
	if rep := e.open(); len(rep.Recovered) > 0 || len(rep.Problems) > 0 {
		t.Fatalf("restart: %+v", rep)
	}
}

// Every way an import can fail leaves the volumes directory and the
// database as they were.
func TestImportRefuses(t *testing.T) {
	e := newEnv(t)
	e.create("src", nil)
	mp := e.mount("src", "c1")
	if err := os.WriteFile(filepath.Join(mp, "data"), make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	e.unmount("src", "c1")
	snap, _ := e.snapshot("src")
	other, _ := crypto.RandomMasterKey()
	tampered := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "t")
		if out, err := exec.Command("cp", "-a", snap, dir).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var file string
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Size() > 5000 {
				file = p
			}
			return nil
		})
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		f.ReadAt(b, 5000)
		b[0] ^= 1
		f.WriteAt(b, 5000)
		return dir
	}
	noHeader := func(t *testing.T) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
		return dir
	}
	same := func(*testing.T) string { return snap }
	cases := []struct {
		name  string
		as    string
		ks    crypto.KeySource
		src   func(*testing.T) string
		class error
		says  string
	}{
		{"existing name", "src", nil, same, ErrConflict, "already exists"},
		{"invalid name", "a/b", nil, same, ErrInvalid, "invalid volume name"},
		{"a block flipped", "copy", nil, tampered, ErrInvalid, "1 item(s) of the archived folder fail authentication"},
		{"another master key", "copy", crypto.StaticKey{Key: other}, same, ErrInvalid, "does not open its header"},
		{"no header", "copy", nil, noHeader, ErrInvalid, "not a securevol directory"},
	}
	before := e.volumeFolders()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.d.Import(tc.as, cpFolder(tc.src(t), tc.ks))
			if !errors.Is(err, tc.class) || !strings.Contains(fmt.Sprint(err), tc.says) {
				t.Fatalf("import: %v, want %v saying %q", err, tc.class, tc.says)
			}
			if got := e.volumeFolders(); !slices.Equal(got, before) {
				t.Errorf("volumes directory: %v, was %v", got, before)
			}
			if _, err := e.st.Get("copy"); err == nil {
				t.Error("a record was made")
			}
		})
	}
	fillErr := errors.New("the copy broke off")
	if err := e.d.Import("copy", func(*backing.Dir) (crypto.KeySource, error) { return nil, fillErr }); !errors.Is(err, fillErr) {
		t.Fatalf("fill failing: %v", err)
	}
	if got := e.volumeFolders(); !slices.Equal(got, before) {
		t.Errorf("volumes directory after a failed fill: %v", got)
	}
}

// An import cut short by a crash leaves a .partial folder: key rotations
// pass it by and the next start deletes it.
func TestImportCutShort(t *testing.T) {
	e := newEnv(t)
	e.create("vol", nil)
	partial := filepath.Join(e.stateDir, "volumes", "0123456789abcdef0123456789abcdef"+partialSuffix)
	if err := os.MkdirAll(filepath.Join(partial, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	k2, _ := crypto.RandomMasterKey()
	if rep, err := e.d.RotateKey(crypto.StaticKey{Key: k2}); err != nil || rep.Rewrapped != 1 {
		t.Fatalf("rotation with an import under way: %+v, %v", rep, err)
	}
	e.close()
	e.key = k2
	if rep := e.open(); len(rep.Problems) > 0 {
		t.Fatalf("start: %v", rep.Problems)
	}
	if _, err := os.Stat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial folder is still there: %v", err)
	}
}

// A mount that cannot hold its writes is not snapshotted.
func TestSnapshotNeedsFreezableMount(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Mounter = func(string, string, string, *crypto.VolumeKeys, MountOptions, *logrus.Entry) (Mount, error) {
			return newFakeMount(), nil
		}
	})
	e.create("vol", nil)
	e.mount("vol", "c1")
	err := e.d.Snapshot(context.Background(), "vol", func(*backing.Dir, *crypto.Header, crypto.KeySource) error {
		t.Fatal("fn ran")
		return nil
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("snapshot of an unfreezable mount: %v", err)
	}
	if err := e.d.Snapshot(context.Background(), "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("snapshot of no volume: %v", err)
	}
}
