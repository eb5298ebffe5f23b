package archive

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// TestRoundtrip archives a real volume, packs and unpacks it, restores it
// into a new folder and mounts that with the same keys: the plaintext
// tree (contents, types, modes, owners, times, xattrs, links) and the
// backing tree are what they were.
func TestRoundtrip(t *testing.T) {
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	populate(t, mnt)
	plain := snapshot(t, mnt)
	unmount()
	stored := snapshot(t, v.backing)

	meta := Meta{Name: "vol", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Labels: map[string]string{"uid": "1000"}}
	handover := []byte("age-encrypted export key")
	dir, s := writeLayout(t, v.backing, WriteOptions{Meta: meta, Handover: handover})
	if s.Files != len(stored) || s.Chunks < 2 || s.Bytes < 8<<20 {
		t.Errorf("summary %+v for %d backing entries", s, len(stored))
	}

	opened, err := Open(dir)
	must(t, err)
	if !bytes.Equal(opened.Handover, handover) || opened.Manifest != s.Manifest || opened.Meta.Name != "vol" ||
		!opened.Meta.CreatedAt.Equal(meta.CreatedAt) || opened.Meta.Labels["uid"] != "1000" {
		t.Errorf("Open says %+v, Write said %+v", opened, s)
	}

	packed := filepath.Join(t.TempDir(), "vol.tar")
	f, err := os.Create(packed)
	must(t, err)
	must(t, Pack(dir, f))
	must(t, f.Close())
	f, err = os.Open(packed)
	must(t, err)
	defer f.Close()
	unpacked := filepath.Join(t.TempDir(), "unpacked")
	us, err := Unpack(f, unpacked)
	must(t, err)
	if us.Manifest != s.Manifest || us.Files != s.Files {
		t.Errorf("Unpack says %+v, Write said %+v", us, s)
	}

	dst, rs, err := restoreInto(t, unpacked)
	must(t, err)
	if rs.Manifest != s.Manifest || !bytes.Equal(rs.Handover, handover) {
		t.Errorf("Restore says %+v", rs)
	}
	compareTrees(t, "backing", stored, snapshot(t, dst))
	if got := snapshot(t, dst)["sparse"]; got.Blocks512Max*512 > 1<<20 {
		t.Errorf("the sparse file's backing file takes %d bytes: holes were filled", got.Blocks512Max*512)
	}
	mnt2, _ := mount(t, dst, v.keys)
	compareTrees(t, "plaintext", plain, snapshot(t, mnt2))
}

// TestDeterministic: two Writes of an unchanged folder give the same
// manifest, and a replacement header changes it.
func TestDeterministic(t *testing.T) {
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	populate(t, mnt)
	unmount()
	opts := WriteOptions{Meta: Meta{Name: "vol", CreatedAt: time.Unix(1e9, 0).UTC()}}
	_, a := writeLayout(t, v.backing, opts)
	_, b := writeLayout(t, v.backing, opts)
	if a.Manifest != b.Manifest {
		t.Fatalf("two writes: %s and %s", a.Manifest, b.Manifest)
	}
	h, err := backing.ReadHeaderAt(v.backing)
	must(t, err)
	other, err := h.Marshal()
	must(t, err)
	other = append(other, ' ')
	opts.Header = other
	dir, c := writeLayout(t, v.backing, opts)
	if c.Manifest == a.Manifest {
		t.Fatal("a replacement header did not change the manifest")
	}
	dst, _, err := restoreInto(t, dir)
	must(t, err)
	got, err := os.ReadFile(filepath.Join(dst, crypto.HeaderName))
	must(t, err)
	if !bytes.Equal(got, other) {
		t.Error("the restored header is not the replacement")
	}
}
