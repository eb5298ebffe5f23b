package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// smallLayout archives a small real volume (one mount, a few files).
func smallLayout(t *testing.T) (string, *Summary) {
	t.Helper()
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	must(t, os.WriteFile(filepath.Join(mnt, "big"), randomBytes(t, 5<<20), 0o644))
	must(t, os.WriteFile(filepath.Join(mnt, "small"), []byte("hello"), 0o644))
	unmount()
	return writeLayout(t, v.backing, WriteOptions{Handover: []byte("handover")})
}

// manifestOf reads the layout's manifest.
func manifestOf(t testing.TB, dir string) *v1.Manifest {
	t.Helper()
	l, err := openLayout(dir)
	must(t, err)
	m, err := v1.ParseManifest(bytes.NewReader(l.manifest))
	must(t, err)
	return m
}

func flipByte(t *testing.T, path string, at func(size int) int) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	b[at(len(b))] ^= 0x20
	must(t, os.WriteFile(path, b, 0o644))
}

// TestTamperedLayout: any change to a blob or the index, a truncated or
// missing blob, is refused by Open, Restore and (packed) Unpack with
// ErrDamaged.
func TestTamperedLayout(t *testing.T) {
	dir, _ := smallLayout(t)
	m := manifestOf(t, dir)
	chunk := BlobPath(dir, m.Layers[1].Digest)
	cases := []struct {
		name   string
		tamper func(dir string)
	}{
		{"flip a byte in a chunk", func(string) { flipByte(t, chunk, func(n int) int { return n / 2 }) }},
		{"flip a byte in the config", func(string) {
			flipByte(t, BlobPath(dir, m.Config.Digest), func(n int) int { return n - 3 })
		}},
		{"flip a byte in the handover", func(string) {
			flipByte(t, BlobPath(dir, m.Layers[len(m.Layers)-1].Digest), func(int) int { return 0 })
		}},
		{"flip a byte in index.json", func(string) {
			flipByte(t, filepath.Join(dir, indexFile), func(n int) int {
				b, _ := os.ReadFile(filepath.Join(dir, indexFile))
				return bytes.Index(b, []byte("sha256:")) + 10
			})
		}},
		{"truncate index.json", func(string) { must(t, os.Truncate(filepath.Join(dir, indexFile), 50)) }},
		{"truncate a chunk", func(string) { must(t, os.Truncate(chunk, m.Layers[1].Size-1)) }},
		{"drop a chunk", func(string) { must(t, os.Remove(chunk)) }},
		{"drop the config", func(string) { must(t, os.Remove(BlobPath(dir, m.Config.Digest))) }},
		{"a chunk replaced by a symlink", func(string) {
			must(t, os.Rename(chunk, chunk+".x"))
			must(t, os.Symlink(chunk+".x", chunk))
		}},
		{"a chunk replaced by a FIFO", func(string) {
			must(t, os.Remove(chunk))
			must(t, mkfifo(chunk))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			backup := copyDir(t, dir)
			defer restoreDir(t, backup, dir)
			tc.tamper(dir)
			if _, err := Open(dir); !errors.Is(err, ErrDamaged) {
				t.Errorf("Open: %v, want ErrDamaged", err)
			}
			dst, _, err := restoreInto(t, dir)
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("Restore: %v, want ErrDamaged", err)
			}
			assertOnly(t, filepath.Dir(dst), "restored")
		})
	}
}

// TestTamperedPack: a flipped byte anywhere in a packed archive, or a
// truncated one, is refused by Unpack, which then leaves nothing.
func TestTamperedPack(t *testing.T) {
	dir, _ := smallLayout(t)
	var packed bytes.Buffer
	must(t, Pack(dir, &packed))
	good := packed.Bytes()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"truncated at a blob's end", good[:len(good)-2048]},
		{"flipped in the middle", flipped(good, len(good)/2)},
		{"flipped in a header", flipped(good, 3)},
		{"flipped in index.json", flipped(good, 512+512+100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "layout")
			if _, err := Unpack(bytes.NewReader(tc.b), out); !errors.Is(err, ErrDamaged) {
				t.Errorf("Unpack: %v, want ErrDamaged", err)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("Unpack left %s behind: %v", out, err)
			}
		})
	}
}

func flipped(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 1
	return c
}

// TestUnpackStrict: Unpack takes nothing but the layout's files, as
// regular files, and writes nothing outside its directory.
func TestUnpackStrict(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		h    tar.Header
	}{
		{"parent", tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Size: 1}},
		{"absolute", tar.Header{Name: "/tmp/evil", Typeflag: tar.TypeReg, Size: 1}},
		{"other file", tar.Header{Name: "evil", Typeflag: tar.TypeReg, Size: 1}},
		{"symlink", tar.Header{Name: "index.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}},
		{"hard link", tar.Header{Name: "index.json", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}},
		{"directory", tar.Header{Name: "blobs/", Typeflag: tar.TypeDir}},
		{"blob in a subdirectory", tar.Header{Name: "blobs/sha256/x/" + hex, Typeflag: tar.TypeReg, Size: 1}},
		{"oversized index", tar.Header{Name: "index.json", Typeflag: tar.TypeReg, Size: maxIndex + 1}},
		{"oversized blob", tar.Header{Name: "blobs/sha256/" + hex, Typeflag: tar.TypeReg, Size: MaxBlob + 1}},
		{"blob not matching its name", tar.Header{Name: "blobs/sha256/" + hex, Typeflag: tar.TypeReg, Size: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			h := tc.h
			h.Mode = 0o644
			must(t, tw.WriteHeader(&h))
			if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
				_, err := tw.Write(make([]byte, h.Size))
				must(t, err)
			}
			tw.Close()
			parent := t.TempDir()
			if _, err := Unpack(bytes.NewReader(b.Bytes()), filepath.Join(parent, "layout")); !errors.Is(err, ErrDamaged) {
				t.Errorf("Unpack: %v, want ErrDamaged", err)
			}
			assertOnly(t, parent)
		})
	}
}

// TestHostileStream: streams that securevol never writes, made into
// consistent archives (every digest right), are refused by Open and
// Restore, which writes nothing outside its destination.
func TestHostileStream(t *testing.T) {
	const (
		a = "xAAAAAAAAAAAAAAAAAAAAA" // after the header's name
		b = "yBBBBBBBBBBBBBBBBBBBBB"
	)
	reg := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size, Mode: 0o644}
	}
	for _, tc := range []struct {
		name string
		want string // in the error
		hdrs []*tar.Header
	}{
		{"parent directory", "not a relative path", []*tar.Header{reg("../x", 1)}},
		{"absolute name", "not a relative path", []*tar.Header{reg("/tmp/x", 1)}},
		{"dot component", "not a relative path", []*tar.Header{reg("./"+a, 1)}},
		{"symlink, then a file through it", "its directory is not in the stream", []*tar.Header{
			{Name: a, Typeflag: tar.TypeSymlink, Linkname: b}, reg(a+"/"+b, 1)}},
		{"symlink target with a slash", "target is not one securevol stores", []*tar.Header{{Name: a, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}},
		{"hard link to outside", "not a relative path", []*tar.Header{{Name: a, Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
		{"hard link to an absolute path", "not a relative path", []*tar.Header{{Name: a, Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}},
		{"hard link to a later entry", "is not an earlier entry", []*tar.Header{{Name: a, Typeflag: tar.TypeLink, Linkname: b}, reg(b, 1)}},
		{"hard link to a missing entry", "is not an earlier entry", []*tar.Header{{Name: b, Typeflag: tar.TypeLink, Linkname: a}}},
		{"hard link to a directory", "is not an earlier entry", []*tar.Header{{Name: a + "/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: b, Typeflag: tar.TypeLink, Linkname: a}}},
		{"hard link to the header", "is not an earlier entry", []*tar.Header{{Name: b, Typeflag: tar.TypeLink, Linkname: crypto.HeaderName}}},
		{"device node as a directory IV", "where securevol keeps a regular file", []*tar.Header{{Name: a + "/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: a + "/" + crypto.DirIVName, Typeflag: tar.TypeChar, Devmajor: 8, Devminor: 0}}},
		{"FIFO as a long name's sidecar", "where securevol keeps a regular file", []*tar.Header{
			{Name: crypto.LongNamePrefix + strings.Repeat("x", 43) + crypto.LongNameSuffix, Typeflag: tar.TypeFifo}}},
		{"long target below the top", "not a name securevol makes there", []*tar.Header{{Name: a + "/", Typeflag: tar.TypeDir, Mode: 0o755},
			reg(a+"/"+crypto.LongTargetPrefix+strings.Repeat("x", 43), 10)}},
		{"name securevol never makes", "not a name securevol makes there", []*tar.Header{reg("passwd.txt", 1)}},
		{"huge declared size", "size 1099511627776", []*tar.Header{reg(a, 1<<40)}},
		{"directory IV of the wrong size", "size 15", []*tar.Header{{Name: a + "/", Typeflag: tar.TypeDir, Mode: 0o755},
			reg(a+"/"+crypto.DirIVName, 15)}},
		{"duplicate name", "out of order", []*tar.Header{reg(a, 1), reg(a, 1)}},
		{"out of order", "out of order", []*tar.Header{reg(b, 1), reg(a, 1)}},
		{"file in a missing directory", "its directory is not in the stream", []*tar.Header{reg(a+"/"+b, 1)}},
		{"a second top", "out of order", []*tar.Header{{Name: "./", Typeflag: tar.TypeDir}}},
		{"foreign attribute", "extended attribute", []*tar.Header{{Name: a, Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "x"}}}},
		{"attribute on a FIFO", "extended attribute", []*tar.Header{{Name: a, Typeflag: tar.TypeFifo, PAXRecords: map[string]string{"SCHILY.xattr.user.sv.AAAA": "x"}}}},
		{"unknown PAX record", "PAX record", []*tar.Header{{Name: a, Typeflag: tar.TypeReg, PAXRecords: map[string]string{"comment": "1"}}}},
		{"access time", "fields securevol does not write", []*tar.Header{{Name: a, Typeflag: tar.TypeReg, AccessTime: time.Unix(5, 0)}}},
		{"mode with type bits", "mode 100644", []*tar.Header{{Name: a, Typeflag: tar.TypeReg, Mode: 0o100644}}},
		{"device numbers on a file", "device 1,0", []*tar.Header{{Name: a, Typeflag: tar.TypeReg, Devmajor: 1}}},
		{"hard link chain leaving the top", "not a relative path", []*tar.Header{{Name: a + "/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: b, Typeflag: tar.TypeLink, Linkname: a + "/../../x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := hostileLayout(t, tc.hdrs)
			if _, err := Open(dir); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want ErrDamaged: ...%s...", err, tc.want)
			}
			dst, _, err := restoreInto(t, dir)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Restore: %v, want ErrDamaged: ...%s...", err, tc.want)
			}
			assertOnly(t, filepath.Dir(dst), "restored")
			if _, err := os.Lstat("/tmp/x"); err == nil {
				t.Error("/tmp/x exists")
			}
		})
	}
}

// hostileLayout makes a layout, consistent in every digest, whose stream
// is a top directory, a header and then hdrs.
func hostileLayout(t *testing.T, hdrs []*tar.Header) string {
	t.Helper()
	var stream bytes.Buffer
	tw := tar.NewWriter(&stream)
	all := append([]*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700},
		{Name: crypto.HeaderName, Typeflag: tar.TypeReg, Mode: 0o400, Size: 2},
	}, hdrs...)
	for _, h := range all {
		h.Format = tar.FormatPAX
		h.ModTime = time.Unix(1e9, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			_, err := tw.Write(make([]byte, h.Size))
			must(t, err)
		}
	}
	// A huge declared size is not followed by its data: the stream ends.
	tw.Flush()
	if last := all[len(all)-1]; last.Size < 1<<20 {
		must(t, tw.Close())
	}
	return layoutOfStream(t, stream.Bytes(), len(all))
}

// layoutOfStream stores stream as an archive's stream of entries entries.
func layoutOfStream(t *testing.T, stream []byte, entries int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	must(t, os.MkdirAll(filepath.Join(dir, blobsDir), 0o755))
	chunks, size, err := writeChunks(dir, func(w io.Writer) error {
		_, err := w.Write(stream)
		return err
	})
	must(t, err)
	cfg := config{Format: FormatVersion, Chunker: thisChunker(), Stream: streamInfo{Size: size, Entries: entries}}
	_, err = writeManifest(dir, &cfg, chunks, nil)
	must(t, err)
	return dir
}

// assertOnly fails t unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }

// copyDir copies the flat tree of a layout into a temporary directory.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy")
	must(t, os.CopyFS(out, os.DirFS(dir)))
	return out
}

// restoreDir puts back a layout copied by copyDir.
func restoreDir(t *testing.T, from, dir string) {
	t.Helper()
	must(t, os.RemoveAll(dir))
	must(t, os.CopyFS(dir, os.DirFS(from)))
}
