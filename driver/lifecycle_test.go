package driver

import (
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
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// Robustness: crash points, slow operations, shutdown, hostile input.

// fakeMount is a Mount that ends when unmounted.
type fakeMount struct {
	once sync.Once
	done chan struct{}
}

func newFakeMount() *fakeMount      { return &fakeMount{done: make(chan struct{})} }
func (f *fakeMount) Unmount() error { f.once.Do(func() { close(f.done) }); return nil }
func (f *fakeMount) Wait()          { <-f.done }
func (f *fakeMount) unmounted() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// gatedMounter blocks each mount until release is closed and records the
// mounts it made.
type gatedMounter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	made    []*fakeMount
}

func newGatedMounter() *gatedMounter {
	return &gatedMounter{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gatedMounter) mount(string, string, string, *crypto.VolumeKeys, int64, *logrus.Entry) (Mount, error) {
	g.entered <- struct{}{}
	<-g.release
	m := newFakeMount()
	g.mu.Lock()
	g.made = append(g.made, m)
	g.mu.Unlock()
	return m, nil
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

// A Remove cut short after the key was destroyed but before the files were
// all deleted is finished at start without a false alarm: the folder has
// data and no header because it is being removed, not because a key was lost.
func TestInterruptedRemoveWithDataIsNoProblem(t *testing.T) {
	e := newEnv(t)
	e.create("half", nil)
	v := e.record("half")
	dir := e.d.backing(v.ID)
	if err := os.WriteFile(filepath.Join(dir, "c2VjcmV0"), []byte("ciphertext"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	if err := destroyKey(dir); err != nil {
		t.Fatal(err)
	}
	e.close()
	rep := e.open()
	if len(rep.Finished) != 1 || len(rep.Problems) != 0 {
		t.Fatalf("start report %+v", rep)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder survived: %v", err)
	}
}

// blockRemoveAll makes removeAll block until the returned func is called.
func blockRemoveAll(t *testing.T) (entered <-chan string, release func()) {
	in := make(chan string, 16)
	gate := make(chan struct{})
	old := removeAll
	removeAll = func(p string) error {
		in <- p
		<-gate
		return old(p)
	}
	var once sync.Once
	rel := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { rel(); removeAll = old })
	return in, rel
}

// Deleting a huge volume's files takes long. Other volumes must not wait for
// it, not even when a key rotation queues up behind it.
func TestSlowRemoveStallsNoOtherVolume(t *testing.T) {
	e := newEnv(t)
	e.create("huge", nil)
	entered, release := blockRemoveAll(t)
	removed := make(chan error, 1)
	go func() { removed <- e.d.Remove(&volume.RemoveRequest{Name: "huge"}) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Remove never reached the file deletion")
	}
	newKey, _ := crypto.RandomMasterKey()
	rotated := make(chan error, 1)
	go func() { _, err := e.d.RotateKey(crypto.StaticKey{Key: newKey}); rotated <- err }()
	time.Sleep(50 * time.Millisecond) // let the rotation queue up
	created := make(chan error, 1)
	go func() { created <- e.d.Create(&volume.CreateRequest{Name: "other"}) }()
	select {
	case err := <-created:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Error("Create of another volume waits for the file deletion of a removed one")
		release()
		<-created
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if err := <-rotated; err != nil {
		t.Fatal(err)
	}
}

// A removal cut short is finished at start, but the engine gives a plugin
// about 9 s to listen: a huge folder must not keep the socket closed.
func TestStartDoesNotWaitForSlowRemoval(t *testing.T) {
	e := newEnv(t)
	e.create("huge", nil)
	v := e.record("huge")
	v.Removing = true
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	e.close()
	entered, release := blockRemoveAll(t)
	opened := make(chan *StartReport, 1)
	go func() { opened <- e.open(func(c *Config) { c.LockWait = 200 * time.Millisecond }) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("start never reached the file deletion")
	}
	select {
	case <-opened:
	case <-time.After(startRemovalWait + 5*time.Second):
		release()
		<-opened
		t.Fatal("Start waited for the deletion of a huge folder")
	}
	// The key is gone already; the volume cannot be mounted or recreated meanwhile.
	if _, err := readHeader(e.d.backing(v.ID)); !errors.Is(err, backing.ErrNoHeader) {
		t.Fatalf("key of a volume being removed: %v", err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "huge", ID: "m"}); err == nil {
		t.Fatal("Mount of a volume being removed succeeded")
	}
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.st.Get("huge"); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removal was never finished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(e.d.backing(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder survived: %v", err)
	}
}

// SIGTERM while a Mount is in flight: Close must not return while that Mount
// can still leave a live mount behind.
func TestCloseWaitsForInFlightMount(t *testing.T) {
	g := newGatedMounter()
	e := newEnv(t, func(c *Config) { c.Mounter = g.mount })
	e.create("vol", nil)
	mounted := make(chan error, 1)
	go func() {
		_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "c1"})
		mounted <- err
	}()
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- e.d.Close() }()
	time.Sleep(50 * time.Millisecond)
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	<-mounted
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.made {
		if !m.unmounted() {
			t.Fatal("a Mount in flight during Close left a live mount behind")
		}
	}
	if e.d.Mounted() != 0 {
		t.Fatalf("%d volumes mounted after Close", e.d.Mounted())
	}
	// Requests after Close are refused, not served half-way.
	if _, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "c2"}); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Mount after Close = %v", err)
	}
	e.d = nil // closed already
}

// Hostile names and options are refused with clear errors; none reaches the disk.
func TestHostileInput(t *testing.T) {
	e := newEnv(t)
	names := []string{"", "a", "..", "../x", "a/b", "/abs", "a\x00b", "vol\n", "ü-vol", "vol ume",
		strings.Repeat("a", 256), ".hidden", "-dash", "a\\b"}
	for _, n := range names {
		if err := e.d.Create(&volume.CreateRequest{Name: n}); err == nil {
			t.Errorf("Create(%q) accepted", n)
		}
		if _, err := e.d.Get(&volume.GetRequest{Name: n}); err == nil {
			t.Errorf("Get(%q) answered", n)
		}
	}
	if err := e.d.Create(&volume.CreateRequest{Name: strings.Repeat("a", 255)}); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	for _, o := range []map[string]string{
		{"uid": "-1"}, {"uid": "4294967295"}, {"uid": "1e3"}, {"uid": "0x10"}, {"uid": "+1"},
		{"gid": "99999999999"}, {"mode": "7777a"}, {"mode": "17777"}, {"mode": "-1"}, {"mode": "0x1ff"},
		{"mode": "9"}, {"": "1"}, {"UID": "1"}, {"password": "hunter2"},
	} {
		err := e.d.Create(&volume.CreateRequest{Name: "opts", Options: o})
		if err == nil {
			t.Errorf("options %v accepted", o)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes an option value: %v", err)
		}
	}
	for _, ok := range []map[string]string{{"mode": "7777"}, {"mode": "0o777"}, {"mode": " 0750 "}, {"uid": "4294967294"}} {
		if _, err := ParseOptions(ok); err != nil {
			t.Errorf("options %v: %v", ok, err)
		}
	}
	ents, _ := os.ReadDir(e.d.volDir)
	if len(ents) != 1 {
		t.Fatalf("%d folders after hostile creates, want 1", len(ents))
	}
	// A huge mount ID is only a map key.
	if err := e.d.Unmount(&volume.UnmountRequest{Name: strings.Repeat("a", 255), ID: strings.Repeat("x", 60000)}); err != nil {
		t.Fatal(err)
	}
}

// --mount-root may be a shared directory (/mnt): Start detaches the stale
// mounts securevol left there, never someone else's mount.
func TestStartLeavesForeignMounts(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	foreign := filepath.Join(e.mountRoot, "backup")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(foreign, unix.MNT_DETACH) })
	e.close()
	rep := e.open()
	if !mounted(t, foreign) {
		t.Fatalf("start detached a mount that is not securevol's (report %+v)", rep)
	}
	if rep.StaleMounts != 0 {
		t.Fatalf("start report %+v", rep)
	}
}

// A key rotation holds the key lock while it re-wraps every folder, which
// takes long with many volumes or a slow disk. Creates and Mounts wait for
// it at most LockWait, then answer a clear error: never past the engine's
// timeout, and never holding a volume's lock indefinitely.
func TestRequestsWaitBoundedForRotation(t *testing.T) {
	g := newGatedMounter()
	close(g.release)
	e := newEnv(t, func(c *Config) { c.LockWait = 200 * time.Millisecond; c.Mounter = g.mount })
	e.create("vol", nil)
	e.d.keyMu.Lock() // a rotation in progress
	released := false
	defer func() {
		if !released {
			e.d.keyMu.Unlock()
		}
	}()
	calls := []struct {
		name string
		call func() error
	}{
		{"create", func() error { return e.d.Create(&volume.CreateRequest{Name: "new"}) }},
		{"mount", func() error {
			_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "m"})
			return err
		}},
		{"remove", func() error { return e.d.Remove(&volume.RemoveRequest{Name: "vol"}) }},
	}
	for _, c := range calls {
		name, call := c.name, c.call
		res := make(chan error, 1)
		go func() { res <- call() }()
		select {
		case err := <-res:
			if err == nil || !strings.Contains(err.Error(), "key rotation") {
				t.Errorf("%s during a rotation = %v, want an error about the rotation", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waits for the rotation without bound", name)
		}
	}
	e.d.keyMu.Unlock()
	released = true
	e.create("new", nil)
	if err := e.d.Remove(&volume.RemoveRequest{Name: "vol"}); err != nil {
		t.Fatalf("Remove after the rotation: %v", err)
	}
}

// Started with the wrong master key (a mistyped passphrase, a replaced key
// file), the daemon still answers Get, so the engine keeps its volumes; but
// it must not create new volumes under that key: once the key source is
// fixed they would be the ones nobody can open.
func TestCreateRefusedUnderWrongMasterKey(t *testing.T) {
	e := newEnv(t)
	e.create("vol", nil)
	e.close()
	good := e.key
	e.key, _ = crypto.RandomMasterKey()
	e.open()
	err := e.d.Create(&volume.CreateRequest{Name: "new"})
	if err == nil || !strings.Contains(err.Error(), "opens none") {
		t.Fatalf("Create under a master key that opens no volume = %v", err)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "vol"}); err != nil {
		t.Fatalf("Get under the wrong key: %v", err)
	}
	// With the right key all is well again.
	e.close()
	e.key = good
	e.open()
	e.create("new", nil)
}
