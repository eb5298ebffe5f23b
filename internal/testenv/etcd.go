package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Etcd is a one-member etcd cluster run for a test from Debian's etcd
// binary (package etcd-server), on free loopback ports with a fresh data
// folder. It is stopped when the test ends.
type Etcd struct {
	t      testing.TB
	bin    string
	dir    string
	client string // http://127.0.0.1:port
	peer   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *SyncBuffer
}

// StartEtcd starts an etcd server for t. Without the binary the test is
// skipped, or fails under CI.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		Missing(t, "no etcd (Debian package etcd-server)")
	}
	e := &Etcd{t: t, bin: bin, dir: t.TempDir(), client: "http://" + freeAddr(t), peer: "http://" + freeAddr(t), logs: &SyncBuffer{}}
	e.Start()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("etcd log (tail):\n%s", tail(e.logs.String(), 4000))
		}
	})
	return e
}

// Endpoints are the server's client URLs.
func (e *Etcd) Endpoints() []string { return []string{e.client} }

// Start starts the server (again, on the same data and ports) and waits
// until it answers.
func (e *Etcd) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.t.Fatal("etcd is running already")
	}
	cmd := exec.Command(e.bin,
		"--name", "test", "--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.client, "--advertise-client-urls", e.client,
		"--listen-peer-urls", e.peer, "--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "test="+e.peer, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.cmd = cmd
	for range 200 {
		if resp, err := http.Get(e.client + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("etcd did not answer on %s:\n%s", e.client, tail(e.logs.String(), 4000))
}

// Stop kills the server (as a crash would); its data stays.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGCONT) // a paused one too
	e.cmd.Process.Kill()
	e.cmd.Wait()
	e.cmd = nil
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return fmt.Sprintf("...%s", s[len(s)-n:])
	}
	return s
}

// Pause stops the server (SIGSTOP) without killing it, as a partition
// would cut it off: it answers nothing until Resume.
func (e *Etcd) Pause() { e.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (e *Etcd) Resume() { e.signal(syscall.SIGCONT) }

func (e *Etcd) signal(s syscall.Signal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.cmd.Process.Signal(s)
	}
}
