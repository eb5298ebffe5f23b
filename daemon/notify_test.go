package daemon

import (
	"context"
	"errors"
	"github.com/securevol/securevol/internal/testenv"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// notifySocket listens as systemd does on $NOTIFY_SOCKET and returns the
// messages the daemon sends.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10 s")
		return ""
	}
}

// systemd hears READY=1 only once the state is loaded and the plugin
// socket answers, and STOPPING=1 when shutdown starts; a daemon that fails
// to start never says READY.
func TestNotifySystemd(t *testing.T) {
	msgs := notifySocket(t)
	cfg := testConfig(t)
	cfg.Keys.KeyFile = filepath.Join(t.TempDir(), "master.key")
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testenv.SyncBuffer{}
	cfg.Log = testLog(t, logs)
	go func() { done <- Run(ctx, cfg) }()

	if m := next(t, msgs); m != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	c, err := net.Dial("unix", cfg.Socket)
	if err != nil {
		t.Fatalf("READY=1 sent before the plugin socket answers: %v", err)
	}
	c.Close()
	if !strings.Contains(logs.String(), "state loaded") {
		t.Fatalf("READY=1 sent before the state was loaded:\n%s", logs.String())
	}
	select {
	case m := <-msgs:
		t.Fatalf("notification %q while serving", m)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if m := next(t, msgs); m != "STOPPING=1" {
		t.Fatalf("notification at shutdown %q, want STOPPING=1", m)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plugin socket left after shutdown: %v", err)
	}

	// A start that fails (the key file is not a key) says nothing.
	bad := testConfig(t)
	bad.Keys.KeyFile = filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad.Keys.KeyFile, []byte("short"), 0o600)
	if err := Run(context.Background(), bad); err == nil {
		t.Fatal("Run with a bad key file succeeded")
	}
	select {
	case m := <-msgs:
		t.Fatalf("a failed start sent %q", m)
	case <-time.After(100 * time.Millisecond):
	}
}
