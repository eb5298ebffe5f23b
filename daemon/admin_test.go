package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/keysource"
)

// The admin socket has the plugin socket's read limits, no write limit (a
// rotation takes as long as the volumes need), and refuses an oversized
// or malformed body, or a short key, with a clear error before it looks at
// the key; the Client's errors match the daemon's sentinels.
func TestAdminSocketLimits(t *testing.T) {
	l, def := adminLimits(), driver.DefaultServerLimits()
	if l.ReadHeader != def.ReadHeader || l.Read != def.Read || l.Idle != def.Idle || l.MaxHeaderBytes != def.MaxHeaderBytes || l.Write != 0 {
		t.Fatalf("admin limits %+v, want %+v without Write", l, def)
	}

	stateDir := t.TempDir()
	ln, err := net.Listen("unix", AdminSocket(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{keys: &masterKeys{kind: keysource.KeyFile}, log: discardLog()}
	srv := svc.adminServer()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialUnix(ctx, AdminSocket(stateDir))
	}}}

	cases := []struct {
		name, body string
		status     int
		code       string
		errPart    string
	}{
		{"oversized", `{"Key":"` + strings.Repeat("A", maxAdminRequest) + `"}`, http.StatusRequestEntityTooLarge, "too-large", "request body larger than 65536 bytes"},
		{"malformed", `{"Key":`, http.StatusBadRequest, "bad-request", "malformed request"},
		{"short key", `{"Key":"AAAA"}`, http.StatusBadRequest, "bad-request", "must be 32 bytes"},
	}
	for _, tc := range cases {
		res, err := hc.Post("http://securevol/Admin.RotateKey", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var r errorReply
		if err := json.Unmarshal(b, &r); err != nil || res.StatusCode != tc.status || r.Code != tc.code || !strings.Contains(r.Err, tc.errPart) {
			t.Errorf("%s: %s %q, want %d %s with %q", tc.name, res.Status, b, tc.status, tc.code, tc.errPart)
		}
	}
	if res, err := hc.Get("http://securevol/Admin.RotateKey"); err != nil || res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v", res, err)
	}

	c, err := Dial(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.RotateKey(context.Background(), []byte("short"))
	var re *RemoteError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &re) || !strings.Contains(err.Error(), "must be 32 bytes") {
		t.Fatalf("Client.RotateKey with a short key: %v", err)
	}
}

// Dial tells "no daemon" (nothing there, or a socket a crash left) from
// other failures.
func TestDialNoDaemon(t *testing.T) {
	empty := t.TempDir()
	if _, err := Dial(empty); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("empty state dir: %v", err)
	}
	stale := t.TempDir()
	ln, err := net.Listen("unix", AdminSocket(stale))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(stale); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("stale socket: %v", err)
	}
	if _, err := os.Stat(AdminSocket(stale)); err != nil {
		t.Fatalf("the stale socket is gone: %v", err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	if _, err := Dial(notDir); err == nil || errors.Is(err, ErrNoDaemon) {
		t.Errorf("state dir that is a file: %v", err)
	}
}

// volume ls and inspect through the admin socket: every volume with its
// facts, a missing one told apart, and nothing secret in any answer.
func TestClientVolumes(t *testing.T) {
	testenv.RequireFUSE(t)
	d := startDaemon(t, testConfig(t))
	for _, n := range []string{"beta", "alpha"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n})
	}
	d.must("/VolumeDriver.Mount", map[string]string{"Name": "alpha", "ID": "c1"})
	d.must("/VolumeDriver.Mount", map[string]string{"Name": "alpha", "ID": "c2"})

	c, err := Dial(d.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	vols, err := c.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].Name != "alpha" || vols[1].Name != "beta" {
		t.Fatalf("Volumes: %+v", vols)
	}
	a := vols[0]
	if a.Status["mounts"] != float64(2) || a.Status["mounted"] != true || a.Status["state"] != "ok" || a.Mountpoint != filepath.Join(d.cfg.MountRoot, "alpha") || a.CreatedAt == "" {
		t.Errorf("alpha: %+v", a)
	}
	if b := vols[1]; b.Status["mounts"] != float64(0) || b.Mountpoint != "" {
		t.Errorf("beta: %+v", b)
	}
	one, err := c.Volume(ctx, "beta")
	if err != nil || one.Name != "beta" || one.Status["id"] != vols[1].Status["id"] {
		t.Fatalf("Volume(beta): %+v %v", one, err)
	}
	if _, err := c.Volume(ctx, "gamma"); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("Volume(gamma): %v", err)
	}

	key, err := os.ReadFile(d.cfg.Keys.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(vols)
	for _, v := range vols {
		id, _ := v.Status["id"].(string)
		b, err := os.ReadFile(filepath.Join(d.cfg.StateDir, "volumes", id, crypto.HeaderName))
		if err != nil {
			t.Fatal(err)
		}
		h, err := crypto.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range [][]byte{key, h.WrappedKey} {
			if len(secret) == 0 {
				t.Fatal("no secret to look for")
			}
			if b, _ := json.Marshal(secret); strings.Contains(string(raw), strings.Trim(string(b), `"`)) {
				t.Fatalf("the answer holds key material: %s", raw)
			}
		}
	}
}

// A daemon whose key comes from a passphrase or a command refuses to
// rotate: there is no key file to replace.
func TestRotateRefusedForOtherSources(t *testing.T) {
	cfg := testConfig(t)
	pf := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pf, []byte("correct horse\n"), 0o600)
	cfg.Keys.PassphraseFile = pf
	d := startDaemon(t, cfg)
	c, err := Dial(d.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.RotateKey(context.Background(), make([]byte, 32))
	if !errors.Is(err, ErrKeySource) || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("rotation of a passphrase daemon: %v", err)
	}
}
