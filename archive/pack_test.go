package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/securevol/securevol/backing"
)

// TestPackBytes: Pack writes the same bytes to a file
// and to any other writer, and they are what tar.Writer makes of the
// layout's files in the documented order (docs/FORMAT.md, "Archive files").
func TestPackBytes(t *testing.T) {
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	populate(t, mnt)
	unmount()
	dir, _ := writeLayout(t, v.backing, WriteOptions{Handover: []byte("handover")})

	var want bytes.Buffer
	tw := tar.NewWriter(&want)
	l, err := openLayout(dir)
	must(t, err)
	names := []string{layoutFile, indexFile}
	seen := map[string]bool{}
	for _, d := range l.blobs() {
		if name := blobsDir + "/" + d.Digest.Hex; !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		must(t, err)
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}))
		_, err = tw.Write(b)
		must(t, err)
	}
	must(t, tw.Close())

	var buf bytes.Buffer
	must(t, Pack(dir, &buf))
	path := filepath.Join(t.TempDir(), "vol.tar")
	f, err := os.Create(path)
	must(t, err)
	must(t, Pack(dir, f))
	must(t, f.Close())
	file, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(buf.Bytes(), want.Bytes()) || !bytes.Equal(file, want.Bytes()) {
		t.Errorf("packed %d bytes to a buffer, %d to a file; tar.Writer makes %d", buf.Len(), len(file), want.Len())
	}
}

// TestPackChangedBlob: a blob whose size is not the manifest's is damage,
// whether Pack writes to a file or not.
func TestPackChangedBlob(t *testing.T) {
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o644))
	unmount()
	var dir string
	must(t, backing.WithRoot(v.backing, func(root *backing.Dir) error {
		dir = filepath.Join(t.TempDir(), "layout")
		_, err := Write(root, dir, WriteOptions{})
		return err
	}))
	l, err := openLayout(dir)
	must(t, err)
	f, err := os.OpenFile(BlobPath(dir, l.chunks[0].Digest), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write([]byte("x"))
	must(t, err)
	must(t, f.Close())
	if err := Pack(dir, &bytes.Buffer{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("Pack of a grown chunk: %v", err)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "vol.tar"))
	must(t, err)
	defer out.Close()
	if err := Pack(dir, out); !errors.Is(err, ErrDamaged) {
		t.Errorf("Pack of a grown chunk into a file: %v", err)
	}
}
