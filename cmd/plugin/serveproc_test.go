package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/mountinfo"
	"github.com/securevol/securevol/internal/testenv"
)

// buildServeBinary returns the securevol binary built from this tree.
func buildServeBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the daemon; skipped with -short")
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "securevol-test-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.bin = filepath.Join(dir, "securevol")
		cmd := exec.Command("go", "build", "-o", built.bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// built is the binary the tests share: compiled once per test run (each
// test used to link its own), removed by TestMain.
var built struct {
	once sync.Once
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.bin != "" {
		os.RemoveAll(filepath.Dir(built.bin))
	}
	os.Exit(code)
}

// serveProc is one `securevol serve` process over a test's directories.
type serveProc struct {
	t                                       testing.TB
	bin                                     string
	dir, stateDir, mountRoot, sock, keyFile string
	extra                                   []string
	cmd                                     *exec.Cmd
	waitc                                   chan error
	logs                                    *testenv.SyncBuffer // stdout and stderr, in order
	stdout, stderr                          *testenv.SyncBuffer
	client                                  *http.Client
}

func newServeProc(t testing.TB, bin string) *serveProc {
	dir := t.TempDir()
	d := &serveProc{t: t, bin: bin, dir: dir, stateDir: filepath.Join(dir, "state"), mountRoot: filepath.Join(dir, "mnt"),
		sock: filepath.Join(dir, "run", "securevol.sock"), keyFile: filepath.Join(dir, "etc", "master.key"), logs: &testenv.SyncBuffer{},
		stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}}
	d.client = testenv.UnixClient(d.sock, 2*time.Minute)
	t.Cleanup(func() {
		d.kill()
		// Whatever a failed test left mounted goes.
		for range 3 {
			mps := mountsBelow(d.mountRoot)
			if len(mps) == 0 {
				break
			}
			for _, mp := range mps {
				unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	return d
}

func (d *serveProc) args(extra ...string) []string {
	a := []string{"serve", "--socket", d.sock, "--state-dir", d.stateDir, "--mount-root", d.mountRoot, "--log-level", "debug"}
	if !containsFlag(d.extra, "--passphrase-file") && !containsFlag(d.extra, "--key-command") {
		a = append(a, "--key-file", d.keyFile)
	}
	return append(append(a, d.extra...), extra...)
}

func containsFlag(args []string, f string) bool {
	for _, a := range args {
		if a == f {
			return true
		}
	}
	return false
}

// start runs serve and waits until it answers on its socket.
func (d *serveProc) start(extra ...string) {
	d.t.Helper()
	if err := d.tryStart(extra...); err != nil {
		d.t.Fatal(err)
	}
}

func (d *serveProc) tryStart(extra ...string) error {
	d.cmd = exec.Command(d.bin, d.args(extra...)...)
	d.cmd.Stdout = io.MultiWriter(d.logs, d.stdout)
	d.cmd.Stderr = io.MultiWriter(d.logs, d.stderr)
	if err := d.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			d.cmd = nil
			return fmt.Errorf("serve exited before listening: %v\n%s", err, d.logs.String())
		default:
		}
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			d.waitc = exited
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("serve did not listen within 15 s\n%s", d.logs.String())
}

func (d *serveProc) kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.waitc
	d.cmd = nil
}

// stop sends SIGTERM and waits for a clean exit.
func (d *serveProc) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.waitc:
		d.cmd = nil
		if err != nil {
			d.t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		d.t.Fatal("serve still running 10 s after SIGTERM (the engine would SIGKILL it now)")
	}
}

// call POSTs to the plugin socket like the engine and decodes the answer.
func (d *serveProc) call(path string, req any, res any) error {
	d.t.Helper()
	return testenv.PluginCall(d.client, path, req, res)
}

func (d *serveProc) must(path string, req any, res any) {
	d.t.Helper()
	if err := d.call(path, req, res); err != nil {
		d.t.Fatal(err)
	}
}

func (d *serveProc) mount(name, id string) string {
	d.t.Helper()
	var r struct{ Mountpoint string }
	d.must("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &r)
	return r.Mountpoint
}

type volInfo struct {
	Name, Mountpoint, CreatedAt string
	Status                      map[string]any
}

func (d *serveProc) get(name string) (*volInfo, error) {
	var r struct{ Volume *volInfo }
	err := d.call("/VolumeDriver.Get", map[string]string{"Name": name}, &r)
	return r.Volume, err
}

func (d *serveProc) list() []volInfo {
	d.t.Helper()
	var r struct{ Volumes []volInfo }
	d.must("/VolumeDriver.List", struct{}{}, &r)
	return r.Volumes
}

func mountsBelow(root string) []string {
	ms, _ := mountinfo.Read()
	var out []string
	for _, m := range ms {
		if m.Mountpoint != root && mountinfo.IsUnder(m.Mountpoint, root) {
			out = append(out, m.Mountpoint)
		}
	}
	return out
}

func writeSynced(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// dbFile is the daemon's database in stateDir.
func dbFile(stateDir string) string { return filepath.Join(stateDir, "securevol.db") }
