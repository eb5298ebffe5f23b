package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The top-level tests run in this order, the legacy daemon last: its test
// ends with a dockerd restart, which drops the client the engine keeps for
// a legacy plugin by name. They use the plugin names securevol-e2e
// (managed) and securevol-e2e-legacy (legacy), never securevol, so they run
// beside a real securevol (make run, an installed plugin) without touching
// it or its volumes.

// TestManagedPlugin runs every scenario against the managed plugin built
// from this tree (make plugin's path: scripts/plugin.sh create + enable).
func TestManagedPlugin(t *testing.T) {
	p := setupManaged(t)
	runScenarios(t, p)
}

// TestPluginPushInstall pushes the plugin to a registry on loopback,
// removes it, and installs it from there the way users do, on a host where
// its mount sources are missing: first the raw install (which the engine
// leaves disabled: the documented mkdir + enable recovers), then
// scripts/plugin.sh install (make install's path), which creates them.
func TestPluginPushInstall(t *testing.T) {
	s := need(t)
	checkFree(t)
	tmp, err := os.MkdirTemp("", "securevol-e2e-registry-")
	if err != nil {
		t.Fatal(err)
	}
	regEnv := []string{"REGISTRY_DIR=" + filepath.Join(tmp, "registry"), "REGISTRY_ADDR=" + freeLoopbackAddr(t)}
	addr := strings.TrimPrefix(regEnv[1], "REGISTRY_ADDR=")
	ref := addr + "/" + managedName + ":latest"
	alias := managedName
	t.Cleanup(func() {
		for _, v := range strings.Fields(func() string {
			o, _ := dockerTry("volume", "ls", "-q", "--filter", "driver="+alias+":latest")
			return o
		}()) {
			dockerTry("volume", "rm", "-f", v)
		}
		dockerTry("plugin", "rm", "-f", alias)
		dockerTry("plugin", "rm", "-f", ref)
		command(regEnv, "", filepath.Join(s.root, "scripts", "registry.sh"), "stop")
		os.RemoveAll(tmp)
	})

	begin := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(begin).Seconds(), what) }
	script(t, regEnv, "registry.sh", "start")
	script(t, []string{"BIN=" + s.bin}, "plugin.sh", "push", ref)
	if _, err := dockerTry("plugin", "inspect", ref); err == nil {
		t.Fatalf("plugin %s still installed after push (plugin.sh push removes the local copy)", ref)
	}

	step("pushed")
	// A clean host: the mount sources do not exist.
	state, keys := filepath.Join(tmp, "state"), filepath.Join(tmp, "keys")
	settings := []string{"state.source=" + state, "keys.source=" + keys, "SECUREVOL_LOG_LEVEL=debug"}
	msg := dockerFails(t, append([]string{"plugin", "install", "--grant-all-permissions", "--alias", alias, ref}, settings...)...)
	if !strings.Contains(msg, "no such file or directory") {
		t.Errorf("install with a missing mount source: %s; want the engine's stat error (docs/DOCKER.md tells users to mkdir)", msg)
	}
	if got := docker(t, "plugin", "inspect", "-f", "{{.Enabled}}", alias); got != "false" {
		t.Fatalf("after the failed enable the plugin is enabled=%s, want installed and disabled", got)
	}
	for _, d := range []string{state, keys} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	step("raw install failed as documented")
	docker(t, "plugin", "enable", alias)
	step("enabled")
	p := &plugin{name: alias, driver: alias + ":latest", managed: true, tmp: tmp, stateDir: state, keyDir: keys}
	checkInstalled(t, p)

	step("served a volume")
	// make install's path: plugin.sh creates the sources itself.
	docker(t, "plugin", "disable", alias)
	docker(t, "plugin", "rm", alias)
	step("removed")
	state2, keys2 := filepath.Join(tmp, "state2"), filepath.Join(tmp, "keys2")
	script(t, nil, "plugin.sh", "install", ref, alias, "state.source="+state2, "keys.source="+keys2)
	step("installed by plugin.sh")
	p.stateDir, p.keyDir = state2, keys2
	checkInstalled(t, p)
	step("served a volume")

	// Upgrade in place with a volume in use by the engine, as docs/DOCKER.md
	// tells: disable -f, upgrade, set the mount sources again (the engine
	// shows the old settings after an upgrade but starts the plugin with
	// the config's defaults), enable; the data is still there.
	vol := newVolume(t, p)
	runSh(t, "echo before-upgrade > /data/f", "-v", vol+":/data")
	docker(t, "plugin", "disable", "-f", alias)
	docker(t, "plugin", "upgrade", "--grant-all-permissions", alias, ref)
	docker(t, "plugin", "set", alias, "state.source="+state2, "keys.source="+keys2)
	docker(t, "plugin", "enable", alias)
	if got := run(t, "-v", vol+":/data", s.image, "cat", "/data/f"); got != "before-upgrade" {
		t.Fatalf("after docker plugin upgrade the volume reads %q", got)
	}
	docker(t, "volume", "rm", vol)
	step("upgraded in place")
}

// checkInstalled: the installed plugin serves an encrypted volume.
func checkInstalled(t *testing.T, p *plugin) {
	t.Helper()
	img := need(t).image
	if got := docker(t, "plugin", "inspect", "-f", "{{.Enabled}}", p.name); got != "true" {
		t.Fatalf("plugin %s enabled = %s", p.name, got)
	}
	vol := newVolume(t, p)
	marker := "sve2e-installed-" + randHex(6)
	runSh(t, "echo "+marker+" > /data/f", "-v", vol+":/data")
	if got := run(t, "-v", vol+":/data", img, "cat", "/data/f"); got != marker {
		t.Fatalf("installed plugin: read %q", got)
	}
	if inspectVolume(t, vol).Driver != p.driver {
		t.Errorf("driver %q", inspectVolume(t, vol).Driver)
	}
	if hits := findPlaintext(t, p.stateDir, marker); len(hits) > 0 {
		t.Fatalf("plaintext on the host: %v", hits)
	}
	docker(t, "volume", "rm", vol)
}

// freeLoopbackAddr picks a free TCP port on 127.0.0.1 (the engine pushes to
// 127.0.0.0/8 registries over plain HTTP).
func freeLoopbackAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}

// TestLegacyPlugin runs the scenarios that apply against `securevol serve`
// on /run/docker/plugins/securevol-e2e-legacy.sock (legacySocket), started
// by the test.
func TestLegacyPlugin(t *testing.T) {
	p := setupLegacy(t)
	runScenarios(t, p)
}
