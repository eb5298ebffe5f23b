package driver

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// writeV1Folder lays out a format 1 backing folder at dir, as securevol
// before format 2 wrote it: the header is built here from the documented
// format 1 construction (docs/FORMAT.md) with the standard library, since
// production code no longer writes format 1. Its "name" label is planted,
// to show it is never trusted. One file, hello.txt, holds content.
func writeV1Folder(t *testing.T, dir string, master []byte, content []byte) {
	t.Helper()
	vk, idb, nonce := make([]byte, 32), make([]byte, 16), make([]byte, 12)
	for _, b := range [][]byte{vk, idb, nonce} {
		rand.Read(b)
	}
	id := hex.EncodeToString(idb)
	wrapped := stdGCM(stdHKDF(master, "securevol v1 wrap")).Seal(append([]byte(nil), nonce...), nonce, vk, []byte("securevol v1 volume key "+id))
	hdr, _ := json.Marshal(map[string]any{
		"format": 1, "id": id, "created": "2024-01-02T03:04:05Z", "content": crypto.ContentCipherName,
		"names": crypto.NameCipherName, "wrapped_key": base64.StdEncoding.EncodeToString(wrapped),
		"labels": map[string]string{"name": "planted", "uid": "0", "gid": "0", "mode": "0755"},
	})
	mustDo(t, os.MkdirAll(dir, 0o755))
	mustDo(t, os.WriteFile(filepath.Join(dir, crypto.HeaderName), hdr, 0o400))
	iv := make([]byte, crypto.DirIVSize)
	rand.Read(iv)
	mustDo(t, os.WriteFile(filepath.Join(dir, crypto.DirIVName), iv, 0o444))

	// The data: only the volume keys matter, which format 1 and 2 share.
	h, err := crypto.ParseHeader(hdr)
	mustDo(t, err)
	mk, _ := crypto.NewMasterKey(master)
	keys, err := h.Open(crypto.StaticKey{Key: mk})
	mustDo(t, err)
	enc, _ := keys.EncryptName("hello.txt", iv)
	fh, fid, _ := crypto.NewFileHeader()
	fc, _ := keys.FileCipher(fid)
	file := filepath.Join(dir, enc)
	mustDo(t, os.WriteFile(file, fc.SealBlock(fh, content, 0), 0o644))
	// An xattr value sealed the format 1 way: bound to its name only.
	xn, _ := keys.EncryptXattrName("user.v1")
	val := stdGCM(stdHKDF(vk, "securevol v1 meta")).Seal(append([]byte(nil), nonce...), nonce, []byte("old attr"), []byte("xattr user.v1"))
	mustDo(t, unix.Setxattr(file, xn, val, 0))
}

func stdHKDF(secret []byte, label string) []byte {
	k := make([]byte, 32)
	io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte(label)), k)
	return k
}

func stdGCM(key []byte) cipher.AEAD {
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	return gcm
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newFolderID(t *testing.T) string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// A format 1 folder is upgraded at start under its database name (not its
// planted label), with no data rewritten: it mounts and reads back, its
// format 1 xattr value included.
func TestUpgradeV1Folder(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	id := newFolderID(t)
	dir := e.d.backing(id)
	writeV1Folder(t, dir, e.keyRaw, []byte("written by format 1"))
	before, _ := os.ReadFile(filepath.Join(dir, crypto.DirIVName))
	opts := store.Options{UID: 0, GID: 0, Mode: 0o755}
	mustDo(t, e.st.Update(func(tx *store.Tx) error {
		return tx.Put(&store.Volume{ID: id, Name: "legacy", CreatedAt: time.Now(), Options: opts})
	}))
	e.close()
	if rep := e.open(); len(rep.Problems) != 0 {
		t.Fatalf("start: %q", rep.Problems)
	}
	h, keys, err := openVolumeAt(dir, crypto.StaticKey{Key: e.key})
	if err != nil || h.Format != crypto.FormatVersion || h.Name != "legacy" || h.Labels["mode"] != "0755" || h.Labels["name"] != "" {
		t.Fatalf("after start: %+v, %v", h, err)
	}
	if keys == nil {
		t.Fatal("no keys")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, crypto.DirIVName)); string(after) != string(before) {
		t.Fatal("the upgrade rewrote the directory IV")
	}
	mp := e.mount("legacy", "c1")
	got, err := os.ReadFile(filepath.Join(mp, "hello.txt"))
	if err != nil || string(got) != "written by format 1" {
		t.Fatalf("read back after upgrade: %q, %v", got, err)
	}
	x := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(mp, "hello.txt"), "user.v1", x); err != nil || string(x[:n]) != "old attr" {
		t.Fatalf("format 1 xattr after upgrade: %q, %v", x[:max(n, 0)], err)
	}
	mustDo(t, os.WriteFile(filepath.Join(mp, "new.txt"), []byte("after"), 0o644))
	e.unmount("legacy", "c1")
	if g, _ := e.d.Get(&volume.GetRequest{Name: "legacy"}); g.Volume.Status["format"] != crypto.FormatVersion {
		t.Fatalf("status after upgrade: %+v", g.Volume.Status)
	}
}

// A format 1 folder that only the first Mount meets (placed while the
// daemon runs) is upgraded then.
func TestUpgradeV1FolderAtMount(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	id := newFolderID(t)
	writeV1Folder(t, e.d.backing(id), e.keyRaw, []byte("v1 data"))
	mustDo(t, e.st.Update(func(tx *store.Tx) error {
		return tx.Put(&store.Volume{ID: id, Name: "late", CreatedAt: time.Now(), Options: DefaultOptions()})
	}))
	mp := e.mount("late", "c1")
	if got, err := os.ReadFile(filepath.Join(mp, "hello.txt")); err != nil || string(got) != "v1 data" {
		t.Fatalf("read back: %q, %v", got, err)
	}
	e.unmount("late", "c1")
	if h, err := readHeader(e.d.backing(id)); err != nil || h.Format != crypto.FormatVersion || h.Name != "late" {
		t.Fatalf("after mount: %+v %v", h, err)
	}
}

// Two volumes' folders swapped on disk: each Mount is refused (before,
// each volume showed the other's plaintext), at once and after a restart.
func TestSwappedFoldersRefused(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("va", nil)
	e.create("vb", nil)
	for _, n := range []string{"va", "vb"} {
		mp := e.mount(n, "c")
		mustDo(t, os.WriteFile(filepath.Join(mp, "who"), []byte(n), 0o644))
		e.unmount(n, "c")
	}
	a, b := e.d.backing(e.record("va").ID), e.d.backing(e.record("vb").ID)
	mustDo(t, os.Rename(a, a+".tmp"))
	mustDo(t, os.Rename(b, a))
	mustDo(t, os.Rename(a+".tmp", b))
	for _, n := range []string{"va", "vb"} {
		_, err := e.d.Mount(&volume.MountRequest{Name: n, ID: "c"})
		if err == nil || !strings.Contains(err.Error(), "holds the volume") {
			t.Fatalf("Mount %s of a swapped folder = %v", n, err)
		}
	}
	e.close()
	rep := e.open()
	if len(rep.Problems) != 2 || !strings.Contains(strings.Join(rep.Problems, "\n"), "holds the volume") {
		t.Fatalf("start after the swap: %q", rep.Problems)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "va", ID: "c"}); err == nil {
		t.Fatal("Mount of a swapped folder after restart succeeded")
	}
	if e.d.Mounted() != 0 {
		t.Fatal("something is mounted")
	}
}

// Rebuilding the database trusts a format 2 folder's name and options only
// once its header opens (authenticated); a format 1 folder's labels are
// used with a warning.
func TestRebuildTrustsOnlyAuthenticatedLabels(t *testing.T) {
	e := newEnv(t)
	e.create("honest", map[string]string{"uid": "1000"})
	e.create("forged", map[string]string{"uid": "1000"})
	e.create("renamed", nil)
	forged := e.d.backing(e.record("forged").ID)
	renamed := e.d.backing(e.record("renamed").ID)
	legacy := e.d.backing(newFolderID(t))
	writeV1Folder(t, legacy, e.keyRaw, []byte("x"))
	e.close()
	mustDo(t, os.Remove(filepath.Join(e.stateDir, "securevol.db")))
	editHeader(t, forged, `"uid": "1000"`, `"uid": "0"`)
	editHeader(t, renamed, `"name": "renamed"`, `"name": "takeover"`)

	logger, hook := logtest.NewNullLogger()
	rep := e.open(func(c *Config) { c.Log = logrus.NewEntry(logger) })
	if strings.Join(rep.Recovered, ",") != "honest,planted" {
		t.Fatalf("recovered %q; problems %q", rep.Recovered, rep.Problems)
	}
	if p := strings.Join(rep.Problems, "\n"); !strings.Contains(p, forged) || !strings.Contains(p, renamed) || !strings.Contains(p, "cannot be authenticated") {
		t.Fatalf("problems %q", rep.Problems)
	}
	warned := false
	for _, en := range hook.AllEntries() {
		warned = warned || (en.Data["folder"] == legacy && strings.Contains(en.Message, "does not authenticate"))
	}
	if !warned {
		t.Fatal("no log line says the format 1 folder's labels are unauthenticated")
	}
	if h, err := readHeader(legacy); err != nil || h.Format != crypto.FormatVersion || h.Name != "planted" {
		t.Fatalf("recovered v1 folder: %+v %v", h, err)
	}
}

func editHeader(t *testing.T, dir, from, to string) {
	t.Helper()
	p := filepath.Join(dir, crypto.HeaderName)
	b, err := os.ReadFile(p)
	mustDo(t, err)
	if !strings.Contains(string(b), from) {
		t.Fatalf("no %s in %s", from, b)
	}
	mustDo(t, os.Remove(p))
	mustDo(t, os.WriteFile(p, []byte(strings.Replace(string(b), from, to, 1)), 0o400))
}
