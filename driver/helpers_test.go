package driver

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/mountinfo"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/store"
)

// env is one driver over real temp directories, a real database and a real
// master key.
type env struct {
	t         testing.TB
	stateDir  string
	mountRoot string
	key       *crypto.MasterKey
	keyRaw    []byte // the key's bytes, to look for them where they must not be
	st        *store.Store
	d         *Driver
	mounter   Mounter
	// beforeStart, if set, prepares each driver open makes before its Start.
	beforeStart func(*Driver)
}

type envOpt func(*Config)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, stateDir: filepath.Join(root, "state"), mountRoot: filepath.Join(root, "mnt")}
	e.key, e.keyRaw = newKey(t)
	e.open(opts...)
	t.Cleanup(e.close)
	return e
}

// open (re)starts the driver over the env's directories.
func (e *env) open(opts ...envOpt) *StartReport {
	e.t.Helper()
	st, err := store.Open(filepath.Join(e.stateDir, "securevol.db"), time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(testWriter{e.t})
	log.SetLevel(logrus.DebugLevel)
	if _, bench := e.t.(*testing.B); bench {
		log.SetOutput(io.Discard)
	}
	cfg := Config{StateDir: e.stateDir, MountRoot: e.mountRoot, Store: st,
		Keys: []crypto.KeySource{crypto.StaticKey{Key: e.key}}, Log: logrus.NewEntry(log), Mounter: e.mounter}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.beforeStart != nil {
		e.beforeStart(d)
	}
	rep, err := d.Start()
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, e.d = st, d
	return rep
}

// close unmounts everything and closes the database (a clean shutdown).
func (e *env) close() {
	if e.d != nil {
		if err := e.d.Close(); err != nil {
			e.t.Errorf("close driver: %v", err)
		}
		e.d = nil
	}
	if e.st != nil {
		e.st.Close()
		e.st = nil
	}
}

// tracked is the number of volumes the driver holds state for (locks,
// mounts, problems): none once all is idle.
func (e *env) tracked() int {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	return len(e.d.vols)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func (e *env) create(name string, opts map[string]string) {
	e.t.Helper()
	if err := e.d.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) record(name string) *store.Volume {
	e.t.Helper()
	v, err := e.st.Get(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// newKey makes a master key the way a key file holds it.
func newKey(t testing.TB) (*crypto.MasterKey, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.key")
	if err := keyfile.GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyfile.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k, raw
}

// openVolumeAt unwraps the keys of the backing folder dir.
func openVolumeAt(dir string, ks crypto.KeySource) (*crypto.Header, *crypto.VolumeKeys, error) {
	var h *crypto.Header
	var keys *crypto.VolumeKeys
	err := backing.WithRoot(dir, func(root *backing.Dir) (err error) {
		h, keys, err = backing.OpenVolume(root, ks)
		return err
	})
	return h, keys, err
}

// mounted reports whether something is mounted at path.
func mounted(t testing.TB, path string) bool {
	t.Helper()
	m, err := mountinfo.At(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	return m != nil
}

// mountsAt counts the mounts stacked at path.
func mountsAt(t testing.TB, path string) int {
	t.Helper()
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.Mountpoint == filepath.Clean(path) {
			n++
		}
	}
	return n
}

func (e *env) mount(name, id string) string {
	e.t.Helper()
	res, err := e.d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Mountpoint
}

func (e *env) unmount(name, id string) {
	e.t.Helper()
	if err := e.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		e.t.Fatal(err)
	}
}

// failingMounter fails every mount, as a FUSE mount can (no /dev/fuse, a
// busy mountpoint).
func failingMounter(string, string, string, *crypto.VolumeKeys, MountOptions, *logrus.Entry) (Mount, error) {
	return nil, errors.New("fuse: device not found")
}

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

func (g *gatedMounter) mount(string, string, string, *crypto.VolumeKeys, MountOptions, *logrus.Entry) (Mount, error) {
	g.entered <- struct{}{}
	<-g.release
	m := newFakeMount()
	g.mu.Lock()
	g.made = append(g.made, m)
	g.mu.Unlock()
	return m, nil
}
