package driver

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/crypto"
)

func TestCreateGetListPath(t *testing.T) {
	e := newEnv(t)
	before := time.Now().Add(-time.Second)
	e.create("data", map[string]string{"uid": "1000", "gid": "1001", "mode": "0750"})
	e.create("logs", nil)

	res, err := e.d.Get(&volume.GetRequest{Name: "data"})
	if err != nil {
		t.Fatal(err)
	}
	v := res.Volume
	if v.Name != "data" || v.Mountpoint != "" {
		t.Errorf("Get = %+v", v)
	}
	created, err := time.Parse(time.RFC3339, v.CreatedAt)
	if err != nil || created.Before(before.Truncate(time.Second)) || created.After(time.Now()) {
		t.Errorf("CreatedAt %q: %v", v.CreatedAt, err)
	}
	for k, want := range map[string]any{"format": crypto.FormatVersion, "cipher": crypto.ContentCipherName, "mounts": 0, "mounted": false, "root": "uid=1000 gid=1001 mode=0750", "state": "ok"} {
		if v.Status[k] != want {
			t.Errorf("Status[%s] = %v, want %v", k, v.Status[k], want)
		}
	}
	if _, ok := v.Status["backing_size"]; !ok {
		t.Errorf("Status has no backing_size: %v", v.Status)
	}

	// The backing root carries the volume's owner and mode (the FUSE root
	// shows them).
	rec := e.record("data")
	fi, err := os.Stat(e.d.backing(rec.ID))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 1000 || st.Gid != 1001 || fi.Mode().Perm() != 0o750 {
		t.Errorf("backing root: uid %d gid %d mode %v", st.Uid, st.Gid, fi.Mode())
	}
	// The header names the volume, so the database can be rebuilt.
	h, err := readHeader(e.d.backing(rec.ID))
	if err != nil || h.Name != "data" || h.Labels["uid"] != "1000" || h.Labels["mode"] != "0750" {
		t.Errorf("header labels %v (%v)", h.Labels, err)
	}

	list, err := e.d.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Volumes) != 2 || list.Volumes[0].Name != "data" || list.Volumes[1].Name != "logs" {
		t.Fatalf("List = %+v", list.Volumes)
	}
	for _, v := range list.Volumes {
		if _, err := time.Parse(time.RFC3339, v.CreatedAt); err != nil {
			t.Errorf("List CreatedAt %q: %v", v.CreatedAt, err)
		}
	}
	p, err := e.d.Path(&volume.PathRequest{Name: "logs"})
	if err != nil || p.Mountpoint != "" {
		t.Errorf("Path of an unmounted volume = %+v, %v; want empty", p, err)
	}
	if caps := e.d.Capabilities(); caps.Capabilities.Scope != "local" {
		t.Errorf("Capabilities = %+v", caps)
	}
}

func TestUnknownVolume(t *testing.T) {
	e := newEnv(t)
	calls := map[string]func() error{
		"Get":     func() error { _, err := e.d.Get(&volume.GetRequest{Name: "nope"}); return err },
		"Path":    func() error { _, err := e.d.Path(&volume.PathRequest{Name: "nope"}); return err },
		"Mount":   func() error { _, err := e.d.Mount(&volume.MountRequest{Name: "nope", ID: "x"}); return err },
		"Unmount": func() error { return e.d.Unmount(&volume.UnmountRequest{Name: "nope", ID: "x"}) },
		"Remove":  func() error { return e.d.Remove(&volume.RemoveRequest{Name: "nope"}) },
	}
	for name, call := range calls {
		if err := call(); err == nil || !strings.Contains(err.Error(), "no such volume") {
			t.Errorf("%s of an unknown volume = %v, want \"no such volume\"", name, err)
		}
	}
}

func TestRecreate(t *testing.T) {
	e := newEnv(t)
	e.create("v1", map[string]string{"uid": "5"})
	id := e.record("v1").ID
	// Same options, spelled differently: a no-op.
	if err := e.d.Create(&volume.CreateRequest{Name: "v1", Options: map[string]string{"uid": "5", "mode": "755", "gid": "0"}}); err != nil {
		t.Fatalf("re-create with the same options: %v", err)
	}
	if e.record("v1").ID != id {
		t.Fatal("re-create replaced the volume")
	}
	err := e.d.Create(&volume.CreateRequest{Name: "v1", Options: map[string]string{"uid": "6"}})
	if err == nil || !strings.Contains(err.Error(), "already exists with different options") || !strings.Contains(err.Error(), "uid=5") {
		t.Fatalf("re-create with other options = %v", err)
	}
	if got := e.record("v1"); got.ID != id || got.Options.UID != 5 {
		t.Fatalf("record changed: %+v", got)
	}
}

// observingKey is a key source that notes the backing root's owner and mode
// at the moment InitVolume asks for the key, just before the header is written.
type observingKey struct {
	crypto.StaticKey
	volDir string
	seen   []os.FileInfo
}

func (o *observingKey) MasterKey(kdf *crypto.KDFParams) (*crypto.MasterKey, error) {
	ents, _ := os.ReadDir(o.volDir)
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(o.volDir, e.Name())); err == nil {
			o.seen = append(o.seen, fi)
		}
	}
	return o.StaticKey.MasterKey(kdf)
}

// A Create cut short after the header was written but before its record
// is recovered from the header at the next start: its root must already
// have the owner and mode asked for, or a non-root container is locked out
// of a volume that looks fine. (Recovery itself must not re-apply them: it
// would undo a chmod or chown made through the mount since.)
func TestHeaderWrittenAfterRootOwnerAndMode(t *testing.T) {
	e := newEnv(t)
	ok := &observingKey{StaticKey: crypto.StaticKey{Key: e.key}, volDir: e.d.volDir}
	e.d.keys = []crypto.KeySource{ok}
	e.create("owned", map[string]string{"uid": "1000", "gid": "1001", "mode": "0750"})
	if len(ok.seen) != 1 {
		t.Fatalf("saw %d folders while the header was written", len(ok.seen))
	}
	fi := ok.seen[0]
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("root mode %v when the header was written, want 0750", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 1000 || st.Gid != 1001) {
		t.Errorf("root owned by %d:%d when the header was written, want 1000:1001", st.Uid, st.Gid)
	}
}
