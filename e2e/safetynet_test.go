package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// testRemoveGraceUndelete: with a removal grace, `docker volume rm` takes
// the volume out of the engine's sight but keeps its key, `securevol
// volume undelete` on the host brings it back with its data, and a
// reference left by a Mount whose answer the engine never saw is cleared
// by `securevol volume release`, after which the engine removes the volume.
func testRemoveGraceUndelete(t *testing.T, p *plugin) {
	s := need(t)
	p.restartWith(t, "SECUREVOL_REMOVE_GRACE", "1h")
	defer p.restartWith(t, "SECUREVOL_REMOVE_GRACE", "0")

	vol := newVolume(t, p)
	runSh(t, "echo precious > /data/f", "-v", vol+":/data")
	backing := p.backingDir(t, vol)
	header := filepath.Join(backing, crypto.HeaderName)
	before, err := os.ReadFile(header)
	if err != nil {
		t.Fatal(err)
	}

	docker(t, "volume", "rm", vol)
	if slices.Contains(volumesOf(t, p.driver), vol) {
		t.Fatalf("docker volume ls still lists %s after docker volume rm", vol)
	}
	if after, err := os.ReadFile(header); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("the key was not kept through the grace period (header: %v)", err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := command(nil, "", s.bin, append(args, "--state-dir", p.stateDir)...)
		if err != nil {
			t.Fatalf("securevol %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	if out := cli("volume", "removed"); !strings.Contains(out, vol) {
		t.Fatalf("securevol volume removed does not list %s:\n%s", vol, out)
	}
	cli("volume", "undelete", vol)
	if got := run(t, "-v", vol+":/data", s.image, "cat", "/data/f"); got != "precious" {
		t.Fatalf("after undelete the volume holds %q", got)
	}
	eventually(t, 10*time.Second, "docker volume ls to list the undeleted volume", func() error {
		if !slices.Contains(volumesOf(t, p.driver), vol) {
			return fmt.Errorf("%s not listed", vol)
		}
		return nil
	})

	// A Mount the engine never saw answered: the plugin holds a reference
	// no Unmount will drop, and refuses removal.
	p.call(t, "/VolumeDriver.Mount", map[string]string{"Name": vol, "ID": "lost-answer"})
	if _, err := dockerTry("volume", "rm", vol); err == nil {
		t.Fatal("docker volume rm succeeded while the plugin held a reference")
	}
	if out := cli("volume", "release", vol, "--mount-id", "lost-answer"); !strings.Contains(out, "released 1") {
		t.Fatalf("release: %s", out)
	}
	docker(t, "volume", "rm", vol)
}

// restartWith restarts the plugin with the environment variable name set
// to value: a managed plugin through docker plugin set (it must be
// disabled for that), the legacy daemon as systemd would after an edit of
// its EnvironmentFile.
func (p *plugin) restartWith(t testing.TB, name, value string) {
	t.Helper()
	if p.managed {
		docker(t, "plugin", "disable", "-f", p.name)
		docker(t, "plugin", "set", p.name, name+"="+value)
		docker(t, "plugin", "enable", p.name)
	} else {
		p.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			t.Fatal("securevol serve did not stop 20 s after SIGTERM")
		}
		p.env = append(slices.DeleteFunc(p.env, func(e string) bool { return strings.HasPrefix(e, name+"=") }), name+"="+value)
		p.startDaemon(t)
	}
	eventually(t, 30*time.Second, "the plugin to serve again", p.serving)
}

// call posts req to the plugin's socket as the engine would.
func (p *plugin) call(t testing.TB, path string, req any) {
	t.Helper()
	sock := legacySocket
	if p.managed {
		sock = filepath.Join("/run/docker/plugins", p.id, "securevol.sock")
	}
	if err := testenv.PluginCall(testenv.UnixClient(sock, time.Minute), path, req, nil); err != nil {
		t.Fatal(err)
	}
}

// testMetricsFromHost: the daemon's metrics socket sits in the state
// folder, which the host sees for a managed plugin too, and counts what a
// container wrote.
func testMetricsFromHost(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	runSh(t, "head -c 3000000 /dev/zero > /data/f && sync", "-v", vol+":/data")
	sock := filepath.Join(p.stateDir, "metrics.sock")
	resp, err := testenv.UnixClient(sock, 30*time.Second).Get("http://metrics/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", sock, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var written float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, fmt.Sprintf("securevol_written_bytes_total{volume=%q} ", vol)) {
			fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &written)
		}
	}
	if written < 3000000 {
		t.Fatalf("securevol_written_bytes_total for %s = %v after a container wrote 3000000 bytes:\n%s", vol, written, tail(string(b), 40))
	}
	docker(t, "volume", "rm", vol)
}
