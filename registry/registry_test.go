package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// Plaintext written through the mount, which the registry must never see.
const (
	secretText = "registry-must-not-see-this-plaintext"
	secretName = "plaintext-file-name-marker"
	secretDir  = "plaintext-directory-marker"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// volume is a real encrypted backing folder, written through cryptfs.
type volume struct {
	backing string
	keys    *crypto.VolumeKeys
}

func newVolume(t *testing.T) *volume {
	t.Helper()
	testenv.RequireFUSE(t)
	mk, err := crypto.RandomMasterKey()
	must(t, err)
	v := &volume{backing: filepath.Join(t.TempDir(), "backing")}
	must(t, os.Mkdir(v.backing, 0o700))
	must(t, backing.WithRoot(v.backing, func(root *backing.Dir) (err error) {
		_, v.keys, err = backing.InitVolume(root, crypto.StaticKey{Key: mk}, "vol", nil)
		return err
	}))
	return v
}

// write mounts the volume, runs fn on the mountpoint and unmounts.
func (v *volume) write(t *testing.T, fn func(mnt string)) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	srv, err := cryptfs.Mount(v.backing, mnt, v.keys, cryptfs.Options{FsName: "securevol-registry-test"})
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("FUSE mount failed: %v", err))
	}
	defer func() {
		for range 50 {
			if err = srv.Unmount(); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
		t.Fatalf("unmount: %v", err)
	}()
	fn(mnt)
}

// archiveOf writes the volume into a new layout.
func (v *volume) archiveOf(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	must(t, backing.WithRoot(v.backing, func(root *backing.Dir) error {
		_, err := archive.Write(root, dir, archive.WriteOptions{Meta: archive.Meta{Name: "vol"}})
		return err
	}))
	return dir
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	must(t, err)
	return b
}

// TestPushPull pushes a volume to a real registry, pulls it into a new
// layout, pushes it again after a small change (only new chunks go up),
// finds no plaintext in the registry's storage, and refuses a pull once a
// blob in that storage is tampered with.
func TestPushPull(t *testing.T) {
	addr, storage := testenv.StartRegistry(t)
	ctx := context.Background()
	v := newVolume(t)
	v.write(t, func(mnt string) {
		must(t, os.Mkdir(filepath.Join(mnt, secretDir), 0o755))
		must(t, os.WriteFile(filepath.Join(mnt, secretDir, secretName), []byte(secretText), 0o644))
		must(t, os.WriteFile(filepath.Join(mnt, "big"), randomBytes(t, 24<<20), 0o644))
	})
	first := v.archiveOf(t)
	ref := addr + "/backups/vol:1"
	rep, err := Push(ctx, first, ref, Options{})
	must(t, err)
	if rep.Skipped != 0 || rep.Uploaded < 4 || rep.UploadedBytes != rep.TotalBytes {
		t.Errorf("first push: %+v", rep)
	}

	pulled := t.TempDir() // an empty directory will do
	s, err := Pull(ctx, ref, pulled, Options{Insecure: true})
	must(t, err)
	if s.Manifest != rep.Digest {
		t.Errorf("pulled %s, pushed %s", s.Manifest, rep.Digest)
	}
	if _, err := archive.Open(pulled); err != nil {
		t.Errorf("Open the pulled layout: %v", err)
	}

	v.write(t, func(mnt string) {
		f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteAt(randomBytes(t, 64<<10), 10<<20)
		must(t, err)
		must(t, f.Close())
	})
	second := v.archiveOf(t)
	rep2, err := Push(ctx, second, addr+"/backups/vol:2", Options{})
	must(t, err)
	if want := newBlobBytes(t, first, second); rep2.UploadedBytes != want || rep2.Skipped == 0 || rep2.UploadedBytes*3 > rep2.TotalBytes {
		t.Errorf("second push: %+v, want %d bytes uploaded", rep2, want)
	}
	t.Logf("second push after a 64 KiB change: %d of %d bytes uploaded (%d blobs, %d skipped)",
		rep2.UploadedBytes, rep2.TotalBytes, rep2.Uploaded, rep2.Skipped)

	assertNoPlaintext(t, storage)

	tamperChunk(t, storage, first)
	bad := filepath.Join(t.TempDir(), "bad")
	_, err = Pull(ctx, ref, bad, Options{})
	t.Logf("tampered: %v", err)
	if !errors.Is(err, archive.ErrDamaged) {
		t.Errorf("Pull of a tampered blob: %v, want ErrDamaged", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a failed pull left %s", bad)
	}
	if _, err := Pull(ctx, ref, pulled, Options{}); !errors.Is(err, archive.ErrNotEmpty) {
		t.Errorf("Pull into a full directory: %v", err)
	}
}

// manifestOf reads the manifest of the layout at dir.
func manifestOf(t *testing.T, dir string) *v1.Manifest {
	t.Helper()
	s, err := archive.Open(dir)
	must(t, err)
	h, err := v1.NewHash(s.Manifest)
	must(t, err)
	raw, err := os.ReadFile(archive.BlobPath(dir, h))
	must(t, err)
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	must(t, err)
	return m
}

// newBlobBytes is the size of the blobs of layout b that layout a lacks.
func newBlobBytes(t *testing.T, a, b string) int64 {
	have := map[v1.Hash]bool{}
	ma := manifestOf(t, a)
	for _, d := range append(ma.Layers, ma.Config) {
		have[d.Digest] = true
	}
	var n int64
	mb := manifestOf(t, b)
	for _, d := range append(mb.Layers, mb.Config) {
		if !have[d.Digest] {
			n += d.Size
			have[d.Digest] = true
		}
	}
	return n
}

// assertNoPlaintext greps every file of the registry's storage for the
// plaintext and its names; the volume's name, which archives keep in the
// clear, shows that the grep sees the config.
func assertNoPlaintext(t *testing.T, storage string) {
	t.Helper()
	found := map[string]bool{}
	err := filepath.WalkDir(storage, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range []string{secretText, secretName, secretDir, `"name":"vol"`} {
			if bytes.Contains(b, []byte(s)) || strings.Contains(path, s) {
				found[s] = true
			}
		}
		return nil
	})
	must(t, err)
	for _, s := range []string{secretText, secretName, secretDir} {
		if found[s] {
			t.Errorf("the registry's storage holds %q", s)
		}
	}
	if !found[`"name":"vol"`] {
		t.Error("the grep did not find the config in the registry's storage")
	}
}

// tamperChunk flips a byte of the first chunk of layout dir where the
// registry stores it.
func tamperChunk(t *testing.T, storage, dir string) {
	t.Helper()
	h := manifestOf(t, dir).Layers[0].Digest
	path := filepath.Join(storage, "docker", "registry", "v2", "blobs", "sha256", h.Hex[:2], h.Hex, "data")
	b, err := os.ReadFile(path)
	must(t, err)
	b[len(b)/2] ^= 1
	must(t, os.WriteFile(path, b, 0o644))
}
