package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
)

// logsPluginName is the managed plugin of TestManagedPluginLogLevels: a
// name of its own, so it runs beside the other e2e tests' plugins.
const logsPluginName = "securevol-e2e-logs"

// engineLine is one line dockerd logged for a plugin's output: the level
// the engine gave it, and the plugin's own line (logrus text, quoted).
var engineLine = regexp.MustCompile(`^time="[^"]*" level=(\w+) msg="(.*)" plugin=[0-9a-f]+$`)

// The engine logs a managed plugin's stdout at level info and its stderr
// at level error (moby's plugin manager). securevol writes info lines to
// stdout and warnings to stderr, so an info line must show as info in the
// engine's log, and a warning as error (or warning). On the way, the
// volume commands on the host reach the managed plugin.
func TestManagedPluginLogLevels(t *testing.T) {
	s := need(t)
	d, err := findDockerd()
	if err != nil {
		t.Fatal(err)
	}
	if d.logPath == "" {
		// Under systemd the log is journald's, and journalctl may be
		// missing; CI starts dockerd with its output in a file.
		testenv.Missing(t, "dockerd's output is not a file this test can read")
	}
	removeLeftoverPlugin(t, logsPluginName)
	p := &plugin{name: logsPluginName, driver: logsPluginName + ":latest", managed: true, dockerLog: d.logPath}
	p.tmp, p.stateDir, p.keyDir = newTemp(t, "logs")
	t.Cleanup(func() { p.teardown(t) })
	script(t, []string{"BIN=" + s.bin}, "plugin.sh", "create", p.name)
	p.id = docker(t, "plugin", "inspect", "-f", "{{.ID}}", p.name)
	// info: so that debug lines do not drown the check, and so the info
	// line shows only if the level setting reaches the plugin.
	docker(t, "plugin", "set", p.name, "state.source="+p.stateDir, "keys.source="+p.keyDir, "SECUREVOL_LOG_LEVEL=info")
	script(t, nil, "plugin.sh", "enable", p.name)

	// First start: the key is generated (a warning), then it serves (info).
	var ready, warned string
	eventually(t, 30*time.Second, "the plugin's start-up lines in dockerd's log", func() error {
		ready, warned = "", ""
		for _, l := range strings.Split(p.logs(), "\n") {
			switch {
			case strings.Contains(l, `msg=\"securevol ready\"`):
				ready = l
			case strings.Contains(l, "generated a new master key"):
				warned = l
			}
		}
		if ready == "" || warned == "" {
			return fmt.Errorf("ready line %q, warning %q", ready, warned)
		}
		return nil
	})
	checkEngineLevel(t, ready, []string{"info"}, "info")
	checkEngineLevel(t, warned, []string{"error", "warning"}, "warning")

	// securevol volume ls on the host reaches the managed plugin's admin
	// socket through its state folder.
	vol := uniq("logs")
	docker(t, "volume", "create", "-d", p.driver, vol)
	out, err := command(nil, "", s.bin, "volume", "ls", "--state-dir", p.stateDir)
	if err != nil || !regexp.MustCompile(`(?m)^`+vol+`\s+\S+\s+0\s+false\s+ok$`).MatchString(out) {
		t.Fatalf("securevol volume ls against the managed plugin: %v\n%s", err, out)
	}
	out, err = command(nil, "", s.bin, "volume", "inspect", "--state-dir", p.stateDir, vol)
	if id := inspectVolume(t, vol).statusString(t, "id"); err != nil || !strings.Contains(out, `"id": "`+id+`"`) {
		t.Fatalf("securevol volume inspect %s (engine says id %s): %v\n%s", vol, id, err, out)
	}
	eventually(t, 10*time.Second, "the create line in dockerd's log", func() error {
		for _, l := range strings.Split(p.logs(), "\n") {
			if strings.Contains(l, `msg=\"created volume\"`) && strings.Contains(l, vol) {
				checkEngineLevel(t, l, []string{"info"}, "info")
				return nil
			}
		}
		return fmt.Errorf("no created volume line for %s", vol)
	})
	for _, l := range strings.Split(strings.TrimSpace(p.logs()), "\n") {
		if strings.Contains(l, `level=debug`) {
			t.Errorf("SECUREVOL_LOG_LEVEL=info, yet a debug line: %s", l)
		}
	}
}

// checkEngineLevel checks the level the engine gave a plugin's line and
// the level securevol gave it.
func checkEngineLevel(t *testing.T, line string, engine []string, own string) {
	t.Helper()
	m := engineLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("not an engine line for plugin output: %s", line)
	}
	ok := false
	for _, e := range engine {
		ok = ok || m[1] == e
	}
	if !ok {
		t.Errorf("the engine logged at level=%s (want %s): %s", m[1], strings.Join(engine, " or "), line)
	}
	if !strings.Contains(m[2], `level=`+own+` `) {
		t.Errorf("securevol's own level is not %s: %s", own, m[2])
	}
}

// removeLeftoverPlugin removes the plugin name if an earlier run of these
// tests left it (its mount sources are their temp folders), and fails t if
// someone else's plugin holds the name.
func removeLeftoverPlugin(t *testing.T, name string) {
	t.Helper()
	out, err := dockerTry("plugin", "inspect", "-f", "{{range .Settings.Mounts}}{{.Source}} {{end}}", name)
	if err != nil {
		return
	}
	if !strings.Contains(out, filepath.Join(os.TempDir(), "securevol-e2e-")) {
		t.Fatalf("a plugin %s is installed (mount sources %s) that these tests did not make; remove it first", name, out)
	}
	dockerTry("plugin", "rm", "-f", name)
	for _, src := range strings.Fields(out) {
		if dir := filepath.Dir(src); strings.HasPrefix(dir, filepath.Join(os.TempDir(), "securevol-e2e-")) {
			os.RemoveAll(dir)
		}
	}
}
