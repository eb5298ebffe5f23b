package driver

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
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

func TestCreateRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		opts map[string]string
		want string
	}{
		{"../etc", nil, "invalid volume name"},
		{"a/b", nil, "invalid volume name"},
		{"..", nil, "invalid volume name"},
		{"x", nil, "invalid volume name"},
		{"", nil, "empty"},
		{strings.Repeat("a", 256), nil, "at most 255"},
		{"ok1", map[string]string{"color": "1G"}, "unknown option \"color\" (valid options: gid, mode, size, uid)"},
		{"ok2", map[string]string{"password": "hunter2"}, "looks like a secret"},
		{"ok3", map[string]string{"uid": "-1"}, "invalid uid"},
		{"ok4", map[string]string{"mode": "999"}, "invalid mode"},
		{"ok5", map[string]string{"gid": "4294967295"}, "invalid gid"},
	}
	for _, c := range cases {
		err := e.d.Create(&volume.CreateRequest{Name: c.name, Options: c.opts})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%.20q, %v) = %v, want %q", c.name, c.opts, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes a secret option value: %v", err)
		}
	}
	if list, _ := e.d.List(); len(list.Volumes) != 0 {
		t.Fatalf("bad creates left volumes: %+v", list.Volumes)
	}
	if ents, _ := os.ReadDir(e.d.volDir); len(ents) != 0 {
		t.Fatalf("bad creates left folders: %v", ents)
	}
}

func TestRemoveShredsKeyThenFolder(t *testing.T) {
	e := newEnv(t)
	e.create("gone", nil)
	dir := e.d.backing(e.record("gone").ID)
	if err := e.d.Remove(&volume.RemoveRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backing folder still there: %v", err)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "gone"}); err == nil {
		t.Fatal("Get answers a removed volume")
	}
	// A removed name can be created again, as a new volume.
	e.create("gone", nil)
}

func TestRemoveRefusedWhileReferenced(t *testing.T) {
	e := newEnv(t)
	e.create("busy", nil)
	v := e.record("busy")
	v.Mounts = map[string]int{"m1": 1}
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	err := e.d.Remove(&volume.RemoveRequest{Name: "busy"})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Remove of a referenced volume = %v", err)
	}
	if _, err := readHeader(e.d.backing(v.ID)); err != nil {
		t.Fatalf("refused Remove damaged the volume: %v", err)
	}
}

// A Remove cut short after the key was destroyed is finished at start.
func TestInterruptedRemoveFinishedAtStart(t *testing.T) {
	e := newEnv(t)
	e.create("half", nil)
	v := e.record("half")
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	if err := destroyKey(e.d.backing(v.ID)); err != nil {
		t.Fatal(err)
	}
	g, err := e.d.Get(&volume.GetRequest{Name: "half"})
	if err != nil || !strings.HasPrefix(g.Volume.Status["state"].(string), "removing") {
		t.Fatalf("Get of a half-removed volume: %+v %v", g, err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "half", ID: "m"}); err == nil {
		t.Fatal("Mount of a half-removed volume succeeded")
	}
	e.close()
	rep := e.open()
	if len(rep.Finished) != 1 || rep.Finished[0] != "half" {
		t.Fatalf("start report %+v", rep)
	}
	if _, err := os.Stat(e.d.backing(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder of the half-removed volume survived: %v", err)
	}
	if _, err := e.st.Get("half"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record survived: %v", err)
	}
}

// Loss of the database: every volume comes back from its folder's header,
// with its options and creation time.
func TestRebuildFromFolders(t *testing.T) {
	e := newEnv(t)
	e.create("alpha", map[string]string{"uid": "1000", "mode": "0700", "size": "64M"})
	e.create("beta", nil)
	want := map[string]*store.Volume{"alpha": e.record("alpha"), "beta": e.record("beta")}
	e.close()
	if err := os.Remove(filepath.Join(e.stateDir, "securevol.db")); err != nil {
		t.Fatal(err)
	}
	rep := e.open()
	if strings.Join(rep.Recovered, ",") != "alpha,beta" || rep.Volumes != 2 || len(rep.Problems) != 0 {
		t.Fatalf("start report %+v", rep)
	}
	for name, w := range want {
		got := e.record(name)
		if got.ID != w.ID || got.Options != w.Options || !got.CreatedAt.Equal(w.CreatedAt) {
			t.Errorf("%s: rebuilt %+v, want %+v", name, got, w)
		}
	}
	// Idempotent: a second start recovers nothing more.
	e.close()
	if rep := e.open(); len(rep.Recovered) != 0 || rep.Volumes != 2 {
		t.Fatalf("second start %+v", rep)
	}
}

func TestStartReportsAndCleans(t *testing.T) {
	e := newEnv(t)
	e.create("kept", nil)
	e.create("lost", nil)
	lost := e.record("lost")
	e.close()
	// A record whose folder vanished is reported, and kept.
	if err := os.RemoveAll(filepath.Join(e.stateDir, "volumes", lost.ID)); err != nil {
		t.Fatal(err)
	}
	// A create cut short before its header: deleted.
	vols := filepath.Join(e.stateDir, "volumes")
	os.MkdirAll(filepath.Join(vols, "cutshort"), 0o700)
	os.WriteFile(filepath.Join(vols, "cutshort", crypto.DirIVName), make([]byte, 16), 0o444)
	// A keyless folder with data: reported, kept.
	os.MkdirAll(filepath.Join(vols, "keyless"), 0o700)
	os.WriteFile(filepath.Join(vols, "keyless", "c2VjcmV0"), []byte("ciphertext"), 0o600)

	rep := e.open()
	if len(rep.Problems) != 2 {
		t.Fatalf("problems %q", rep.Problems)
	}
	if _, err := os.Stat(filepath.Join(vols, "cutshort")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty cut-short folder kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vols, "keyless", "c2VjcmV0")); err != nil {
		t.Errorf("keyless folder with data deleted: %v", err)
	}
	g, err := e.d.Get(&volume.GetRequest{Name: "lost"})
	if err != nil || !strings.Contains(g.Volume.Status["state"].(string), "missing") {
		t.Fatalf("Get(lost) = %+v, %v", g, err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "lost", ID: "m"}); err == nil {
		t.Fatal("Mount of a volume without folder succeeded")
	}
	if v := e.record("lost"); len(v.Mounts) != 0 {
		t.Fatalf("failed Mount left a reference: %+v", v.Mounts)
	}
}

// failingMounter fails every mount, as a FUSE mount can (no /dev/fuse, a
// busy mountpoint).
func failingMounter(string, string, string, *crypto.VolumeKeys, int64, *logrus.Entry) (Mount, error) {
	return nil, errors.New("fuse: device not found")
}

func TestFailedMountLeavesNothing(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Mounter = failingMounter })
	e.create("vol", nil)
	_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "abc"})
	if err == nil || !strings.Contains(err.Error(), "mount vol") {
		t.Fatalf("Mount = %v", err)
	}
	if v := e.record("vol"); len(v.Mounts) != 0 {
		t.Errorf("reference left after a failed mount: %v", v.Mounts)
	}
	if _, err := os.Stat(e.d.mountpoint("vol")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mountpoint left after a failed mount: %v", err)
	}
	if e.d.Mounted() != 0 {
		t.Error("driver believes the volume is mounted")
	}
	// The volume is not stuck: it can still be removed.
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); err != nil {
		t.Fatal(err)
	}
}

func TestWrongMasterKey(t *testing.T) {
	e := newEnv(t)
	e.create("vol", nil)
	e.close()
	e.key, _ = crypto.RandomMasterKey()
	e.open()
	_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "abc"})
	if err == nil || !strings.Contains(err.Error(), "master key does not open") {
		t.Fatalf("Mount under the wrong key = %v", err)
	}
}

// No answer carries key material, wrapped or not.
func TestAnswersHoldNoSecrets(t *testing.T) {
	e := newEnv(t)
	e.create("vol", map[string]string{"uid": "1"})
	h, err := readHeader(e.d.backing(e.record("vol").ID))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := e.d.Get(&volume.GetRequest{Name: "vol"})
	l, _ := e.d.List()
	b, _ := json.Marshal([]any{g, l})
	raw := e.keyRaw
	if len(raw) != crypto.KeySize {
		t.Fatalf("key file holds %d bytes", len(raw))
	}
	for _, secret := range [][]byte{raw, []byte(hex.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(raw)),
		[]byte(base64.StdEncoding.EncodeToString(h.WrappedKey)), []byte(hex.EncodeToString(h.WrappedKey))} {
		if bytes.Contains(b, secret) {
			t.Fatalf("answer contains key material: %s", b)
		}
	}
}

// A request for one volume never waits on another volume's work, and a
// request for a busy volume gives up with a clear error.
func TestLocksArePerVolume(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LockWait = 200 * time.Millisecond })
	e.create("slow", nil)
	unlock, err := e.d.locks.lock("slow", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.d.Create(&volume.CreateRequest{Name: "fast"}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Create of another volume waited for a held lock")
	}
	// Reads take no lock at all.
	if _, err := e.d.Get(&volume.GetRequest{Name: "slow"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.d.Mount(&volume.MountRequest{Name: "slow", ID: "m"})
	if !errors.Is(err, errBusy) || !strings.Contains(err.Error(), "try again") {
		t.Fatalf("Mount of a locked volume = %v", err)
	}
	unlock()
	if n := e.d.locks.size(); n != 0 {
		t.Fatalf("%d lock entries linger", n)
	}
}

func TestLocksExclude(t *testing.T) {
	l := newNameLocks()
	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.lock("v", 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxInside = max(maxInside, inside)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxInside != 1 || l.size() != 0 {
		t.Fatalf("max holders %d, entries left %d", maxInside, l.size())
	}
}

func TestRotateKey(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"r1", "r2", "r3"} {
		e.create(n, nil)
	}
	oldKS := crypto.StaticKey{Key: e.key}
	newKey, _ := crypto.RandomMasterKey()
	newKS := crypto.StaticKey{Key: newKey}
	rep, err := e.d.RotateKey(newKS)
	if err != nil || rep.Rewrapped != 3 {
		t.Fatalf("RotateKey = %+v, %v", rep, err)
	}
	for _, n := range []string{"r1", "r2", "r3"} {
		dir := e.d.backing(e.record(n).ID)
		if _, _, err := openVolumeAt(dir, oldKS); !errors.Is(err, crypto.ErrWrongKey) {
			t.Errorf("%s: old key still opens it: %v", n, err)
		}
		if _, _, err := openVolumeAt(dir, newKS); err != nil {
			t.Errorf("%s: new key does not open it: %v", n, err)
		}
	}
	// New volumes are wrapped by the new key; a second rotation to the same
	// key is a no-op that succeeds (resumable).
	e.create("r4", nil)
	if _, _, err := openVolumeAt(e.d.backing(e.record("r4").ID), newKS); err != nil {
		t.Fatalf("volume created after rotation: %v", err)
	}
	if rep, err := e.d.RotateKey(newKS); err != nil || rep.Rewrapped != 4 {
		t.Fatalf("repeated RotateKey = %+v, %v", rep, err)
	}
}

// A rotation that cannot re-wrap some folder keeps both keys usable.
func TestRotateKeyPartialFailure(t *testing.T) {
	e := newEnv(t)
	e.create("good", nil)
	e.create("foreign", nil)
	// "foreign" is under some third key that neither side knows.
	other, _ := crypto.RandomMasterKey()
	fdir := e.d.backing(e.record("foreign").ID)
	if err := rewrap(fdir, crypto.StaticKey{Key: e.key}, crypto.StaticKey{Key: other}); err != nil {
		t.Fatal(err)
	}
	e.create("late", nil)
	newKey, _ := crypto.RandomMasterKey()
	rep, err := e.d.RotateKey(crypto.StaticKey{Key: newKey})
	if err == nil || len(rep.Failed) != 1 || rep.Rewrapped != 2 {
		t.Fatalf("RotateKey = %+v, %v", rep, err)
	}
	e.d.keyMu.RLock()
	n := len(e.d.keys)
	e.d.keyMu.RUnlock()
	if n != 2 {
		t.Fatalf("after a partial rotation the driver holds %d keys, want 2", n)
	}
}
