package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/internal/testenv"
)

// securevol volume ls and inspect ask the running daemon: a table, JSON,
// a missing name told apart; and only root may ask.
func TestVolumeCommands(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)
	d := newServeProc(t, bin)
	d.start()
	for _, n := range []string{"vol-b", "vol-a"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n}, nil)
	}
	d.mount("vol-a", "c1")
	d.mount("vol-a", "c2")

	out, code := securevol(t, bin, "volume", "ls", "--state-dir", d.stateDir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !regexp.MustCompile(`^NAME\s+CREATED\s+MOUNTS\s+MOUNTED\s+STATE$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^vol-a\s+\S+\s+2\s+true\s+ok$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^vol-b\s+\S+\s+0\s+false\s+ok$`).MatchString(lines[2]) {
		t.Fatalf("volume ls: exit %d\n%s", code, out)
	}
	// The state dir can come from the daemon's variable too.
	cmd := exec.Command(bin, "volume", "ls", "--json")
	cmd.Env = append(os.Environ(), "SECUREVOL_STATE_DIR="+d.stateDir)
	b, err := cmd.Output()
	var vols []daemon.VolumeInfo
	if err != nil || json.Unmarshal(b, &vols) != nil || len(vols) != 2 || vols[0].Name != "vol-a" || vols[0].Status["mounts"] != float64(2) {
		t.Fatalf("volume ls --json: %v\n%s", err, b)
	}

	out, code = securevol(t, bin, "volume", "inspect", "--state-dir", d.stateDir, "vol-b")
	vols = nil
	if code != 0 || json.Unmarshal([]byte(out), &vols) != nil || len(vols) != 1 || vols[0].Name != "vol-b" || vols[0].Status["id"] == nil {
		t.Fatalf("volume inspect: exit %d\n%s", code, out)
	}
	out, code = securevol(t, bin, "volume", "inspect", "--state-dir", d.stateDir, "vol-a", "nope")
	if code != 1 || !strings.Contains(out, `"name": "vol-a"`) || !strings.Contains(out, `"c1": 1`) || !strings.Contains(out, `volume "nope": no such volume`) {
		t.Fatalf("volume inspect of a missing volume: exit %d\n%s", code, out)
	}
	key, _ := os.ReadFile(d.keyFile)
	for _, form := range secretForms(key) {
		if strings.Contains(out, string(form)) {
			t.Fatal("the master key is in the output")
		}
	}

	// Only root: the socket's mode stops others, and so does the check of
	// the caller's credentials behind it (tried with the mode opened up).
	if os.Geteuid() != 0 {
		testenv.Missing(t, "not root")
	}
	for _, dir := range []string{filepath.Dir(bin), filepath.Dir(d.dir), d.dir, d.stateDir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func() (string, int) {
		return securevol(t, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "volume", "ls", "--state-dir", d.stateDir)
	}
	if out, code := asNobody(); code != 1 || !strings.Contains(out, "permission denied") || !strings.Contains(out, "run it as root") {
		t.Fatalf("volume ls as nobody: exit %d\n%s", code, out)
	}
	os.Chmod(daemon.AdminSocket(d.stateDir), 0o666)
	if out, code := asNobody(); code != 1 || !strings.Contains(out, "only root may use the admin socket") || strings.Contains(out, "vol-a") {
		t.Fatalf("volume ls as nobody through an open socket: exit %d\n%s", code, out)
	}
}
