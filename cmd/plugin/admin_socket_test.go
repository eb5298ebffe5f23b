package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securevol/securevol/driver"
)

// The admin socket has the plugin socket's read limits, no write limit (a
// rotation takes as long as the volumes need), and refuses an oversized
// body with a clear 413 before it looks at the key.
func TestAdminSocketLimits(t *testing.T) {
	l, def := adminLimits(), driver.DefaultServerLimits()
	if l.ReadHeader != def.ReadHeader || l.Read != def.Read || l.Idle != def.Idle || l.MaxHeaderBytes != def.MaxHeaderBytes || l.Write != 0 {
		t.Fatalf("admin limits %+v, want %+v without Write", l, def)
	}

	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	adm := &admin{cfg: &serveConfig{}, keys: &daemonKeys{kind: "key file"}}
	srv := adm.server()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}

	cases := []struct {
		name, body string
		status     int
		errPart    string
	}{
		{"oversized", `{"Key":"` + strings.Repeat("A", maxAdminRequest) + `"}`, http.StatusRequestEntityTooLarge, "request body larger than 4096 bytes"},
		{"malformed", `{"Key":`, http.StatusBadRequest, "malformed request"},
		{"short key", `{"Key":"AAAA"}`, http.StatusBadRequest, "must be 32 bytes"},
	}
	for _, tc := range cases {
		res, err := c.Post("http://securevol/Admin.RotateKey", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var r rotateResponse
		if err := json.Unmarshal(b, &r); err != nil || res.StatusCode != tc.status || !strings.Contains(r.Err, tc.errPart) {
			t.Errorf("%s: %s %q, want %d with %q", tc.name, res.Status, b, tc.status, tc.errPart)
		}
	}
}
