package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/logging"
	"github.com/securevol/securevol/internal/mountinfo"
	"github.com/securevol/securevol/internal/testenv"
)

// testDaemon is Run in this process over a test's directories.
type testDaemon struct {
	t      *testing.T
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	logs   *testenv.SyncBuffer
	plugin *http.Client
}

// testConfig is a daemon configuration in a fresh temp dir, its key file
// generated on first start.
func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	return Config{
		Socket:    filepath.Join(dir, "run", "securevol.sock"),
		StateDir:  filepath.Join(dir, "state"),
		MountRoot: filepath.Join(dir, "mnt"),
	}
}

// startDaemon runs the daemon with cfg (Keys empty: a key file in the
// temp dir) and waits until its plugin socket answers; it is stopped when
// t ends.
func startDaemon(t *testing.T, cfg Config) *testDaemon {
	t.Helper()
	if cfg.Keys.KeyFile == "" && cfg.Keys.PassphraseFile == "" && cfg.Keys.Command == "" {
		cfg.Keys.KeyFile = filepath.Join(filepath.Dir(cfg.StateDir), "master.key")
	}
	d := &testDaemon{t: t, cfg: cfg, done: make(chan error, 1), logs: &testenv.SyncBuffer{}}
	d.cfg.Log = testLog(t, d.logs)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- Run(ctx, d.cfg) }()
	t.Cleanup(func() {
		d.stop()
		for _, m := range mountsUnder(cfg.MountRoot) {
			unix.Unmount(m, unix.MNT_DETACH)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	d.plugin = testenv.UnixClient(cfg.Socket, time.Minute)
	for i := 0; ; i++ {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("Run returned before serving: %v\n%s", err, d.logs.String())
		default:
		}
		if c, err := net.Dial("unix", cfg.Socket); err == nil {
			c.Close()
			return d
		}
		if i > 1000 {
			t.Fatalf("the daemon did not listen within 10 s\n%s", d.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLog logs at debug level to w.
func testLog(t *testing.T, w io.Writer) *logrus.Entry {
	t.Helper()
	log, err := logging.New(logging.Options{Level: "debug", Out: w, Err: w})
	if err != nil {
		t.Fatal(err)
	}
	return log
}

// stop cancels Run and returns what it returned (once).
func (d *testDaemon) stop() error {
	d.cancel()
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(15 * time.Second):
		d.t.Fatal("Run did not return 15 s after its context ended")
		return nil
	}
}

// call posts to the plugin socket as the engine does.
func (d *testDaemon) call(path string, req any) error {
	d.t.Helper()
	return testenv.PluginCall(d.plugin, path, req, nil)
}

func (d *testDaemon) must(path string, req any) {
	d.t.Helper()
	if err := d.call(path, req); err != nil {
		d.t.Fatal(err)
	}
}

func mountsUnder(root string) []string {
	ms, _ := mountinfo.Read()
	var out []string
	for _, m := range ms {
		if m.Mountpoint != root && mountinfo.IsUnder(m.Mountpoint, root) {
			out = append(out, m.Mountpoint)
		}
	}
	return out
}

// initVolume makes a volume folder under stateDir/volumes/id with ks.
func initVolume(t *testing.T, stateDir, id string, ks crypto.KeySource) *crypto.Header {
	t.Helper()
	dir := filepath.Join(stateDir, "volumes", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var h *crypto.Header
	if err := backing.WithRoot(dir, func(root *backing.Dir) (err error) {
		h, _, err = backing.InitVolume(root, ks, id, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// opens reports whether ks opens the volume folder dir.
func opens(dir string, ks crypto.KeySource) error {
	return backing.WithRoot(dir, func(root *backing.Dir) error {
		_, _, err := backing.OpenVolume(root, ks)
		return err
	})
}
