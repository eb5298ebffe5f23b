package e2e

import (
	"github.com/securevol/securevol/internal/mountinfo"

	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// The tests' plugins have names of their own, never securevol: a legacy
// daemon the user runs (make run, systemd) or a managed plugin securevol
// they installed keeps answering to securevol beside the tests, which
// neither see nor touch it or its volumes.
const (
	// managedName is the managed plugin the tests build from this tree
	// (scripts/plugin.sh create) or install from their registry (as the
	// alias); the engine calls it securevol-e2e:latest.
	managedName = "securevol-e2e"
	// legacyName is the legacy daemon the tests start: a name no managed
	// plugin takes, because the engine keeps the client of a legacy plugin
	// it once used under a name until it restarts, and that client shadows
	// a managed plugin of the same name.
	legacyName = "securevol-e2e-legacy"
	// legacySocket is where the engine finds the legacy plugin legacyName.
	legacySocket = "/run/docker/plugins/" + legacyName + ".sock"
)

// plugin is securevol as the engine sees it, installed one of two ways.
type plugin struct {
	name     string // what -d and docker plugin take
	driver   string // the Driver the engine reports: name+":latest" (managed) or name (legacy)
	managed  bool
	tmp      string // everything on the host: state, keys (and, legacy, mounts and log)
	stateDir string // host folder holding the database and volumes/<id>
	keyDir   string // host folder holding master.key

	// managed
	id        string // full plugin ID
	dockerLog string // dockerd's log file: the plugin's output lands there

	// legacy
	args    []string
	env     []string // added to the daemon's environment
	daemon  *exec.Cmd
	exited  chan struct{}
	logPath string
}

func (p *plugin) String() string {
	if p.managed {
		return "managed plugin " + p.name
	}
	return "legacy daemon on " + legacySocket
}

// checkFree makes sure the tests' names are theirs alone: it removes what
// an earlier run of these tests left behind (the plugin securevol-e2e with
// temp mount sources, volumes of the tests' drivers) and fails t if
// anything else holds one of those names. The real securevol (a running
// make run, an installed plugin, their volumes) is never looked at.
func checkFree(t testing.TB) {
	t.Helper()
	if out, err := dockerTry("plugin", "inspect", "-f", "{{range .Settings.Mounts}}{{.Source}} {{end}}", managedName); err == nil {
		if !strings.Contains(out, filepath.Join(os.TempDir(), "securevol-e2e-")) {
			t.Fatalf("a plugin %s is installed (mount sources %s) that these tests did not make: they install and remove their own under that name; remove it first (docker plugin rm -f %s)", managedName, out, managedName)
		}
		t.Logf("removing the plugin %s left by an earlier e2e run", managedName)
		for _, v := range strings.Fields(docker(t, "volume", "ls", "-q", "--filter", "driver="+managedName+":latest")) {
			dockerTry("volume", "rm", "-f", v)
		}
		dockerTry("plugin", "rm", "-f", managedName)
		for _, src := range strings.Fields(out) {
			if dir := filepath.Dir(src); strings.HasPrefix(dir, filepath.Join(os.TempDir(), "securevol-e2e-")) {
				os.RemoveAll(dir) // the earlier run's temp folder
			}
		}
	}
	if socketAnswers(legacySocket) == nil {
		t.Fatalf("a daemon serves %s, the e2e tests' own socket (another run of these tests, or the daemon of a killed one?): stop it first", legacySocket)
	}
	for _, driver := range []string{managedName + ":latest", legacyName} {
		for _, v := range volumesOf(t, driver) {
			if !strings.HasPrefix(v, prefix) && !isHex64(v) {
				t.Fatalf("the engine holds volume %s of driver %s, the e2e tests' own: they refuse to remove a volume they did not name", v, driver)
			}
			dockerTry("volume", "rm", "-f", v)
		}
	}
}

func isHex64(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && len(s) == 64
}

// newTemp makes the fixture's temp folder, named so leftovers are
// recognised, with state/ and keys/ in it.
func newTemp(t testing.TB, kind string) (tmp, state, keys string) {
	t.Helper()
	tmp, err := os.MkdirTemp("", "securevol-e2e-"+kind+"-")
	if err != nil {
		t.Fatal(err)
	}
	state, keys = filepath.Join(tmp, "state"), filepath.Join(tmp, "keys")
	for _, d := range []string{state, keys} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return tmp, state, keys
}

// setupManaged builds the plugin from this tree with scripts/plugin.sh (as
// make plugin does), points its state and key mounts at temp folders,
// enables it, and removes it with its volumes when t ends.
func setupManaged(t testing.TB) *plugin {
	need(t)
	checkFree(t)
	return newManaged(t)
}

// newManaged is setupManaged without the check for leftovers, for a test
// that runs it beside a legacy daemon.
func newManaged(t testing.TB) *plugin {
	s := need(t)
	d, err := findDockerd()
	if err != nil {
		t.Fatal(err)
	}
	p := &plugin{name: managedName, driver: managedName + ":latest", managed: true, dockerLog: d.logPath}
	p.tmp, p.stateDir, p.keyDir = newTemp(t, "managed")
	t.Cleanup(func() { p.teardown(t) })

	script(t, []string{"BIN=" + s.bin}, "plugin.sh", "create", p.name)
	p.id = docker(t, "plugin", "inspect", "-f", "{{.ID}}", p.name)
	docker(t, "plugin", "set", p.name,
		"state.source="+p.stateDir, "keys.source="+p.keyDir, "SECUREVOL_LOG_LEVEL=debug")
	script(t, nil, "plugin.sh", "enable", p.name)
	if got := docker(t, "plugin", "inspect", "-f", "{{.Enabled}}", p.name); got != "true" {
		t.Fatalf("plugin %s enabled = %s after scripts/plugin.sh enable", p.name, got)
	}
	// The backing folders are found where the plugin's state mount says.
	if src := docker(t, "plugin", "inspect", "-f", `{{range .Settings.Mounts}}{{if eq .Name "state"}}{{.Source}}{{end}}{{end}}`, p.name); src != p.stateDir {
		t.Fatalf("plugin state mount source %q, set %q", src, p.stateDir)
	}
	if !p.resolves() {
		// The engine keeps the client of a legacy plugin it once used
		// under this name until it restarts, and that shadows the managed
		// plugin (docs/DOCKER.md: switching install paths).
		if why := restartForbidden(t); why != "" {
			t.Fatalf("-d %s reaches a legacy plugin of that name this engine used earlier, not the managed plugin; restart dockerd first (%s)", p.name, why)
		}
		t.Logf("-d %s reaches a cached legacy plugin: restarting dockerd", p.name)
		restartDockerd(t)
		p.waitEnabled(t)
		if !p.resolves() {
			t.Fatalf("-d %s does not reach the managed plugin even after a dockerd restart", p.name)
		}
	}
	return p
}

// resolves reports whether -d p.name reaches the managed plugin.
func (p *plugin) resolves() bool {
	probe := uniq("probe")
	if _, err := dockerTry("volume", "create", "-d", p.name, probe); err != nil {
		return false
	}
	defer dockerTry("volume", "rm", "-f", probe)
	d, _ := dockerTry("volume", "inspect", "-f", "{{.Driver}}", probe)
	return d == p.driver
}

// waitEnabled waits for the engine to enable the managed plugin again (at
// its start it enables the plugins that were enabled).
func (p *plugin) waitEnabled(t testing.TB) {
	t.Helper()
	eventually(t, 30*time.Second, "the plugin to be enabled again", func() error {
		if got, _ := dockerTry("plugin", "inspect", "-f", "{{.Enabled}}", p.name); got != "true" {
			return fmt.Errorf("enabled = %q", got)
		}
		return nil
	})
}

// serving checks that the daemon answers on its socket (for a managed
// plugin: the engine's copy of the plugin's socket folder).
func (p *plugin) serving() error {
	if !p.managed {
		return socketAnswers(legacySocket)
	}
	return socketAnswers(filepath.Join("/run/docker/plugins", p.id, "securevol.sock"))
}

// setupLegacy starts `securevol serve` on the legacy socket with temp state
// and key folders, as systemd would start it, and stops it when t ends.
func setupLegacy(t testing.TB) *plugin {
	need(t)
	checkFree(t)
	return newLegacy(t)
}

// newLegacy is setupLegacy without the check for leftovers.
func newLegacy(t testing.TB) *plugin {
	p := &plugin{name: legacyName, driver: legacyName}
	p.tmp, p.stateDir, p.keyDir = newTemp(t, "legacy")
	p.logPath = filepath.Join(p.tmp, "daemon.log")
	p.args = []string{"serve",
		"--socket", legacySocket,
		"--state-dir", p.stateDir,
		"--mount-root", filepath.Join(p.tmp, "mnt"),
		"--key-file", filepath.Join(p.keyDir, "master.key"),
		"--log-level", "debug",
	}
	t.Cleanup(func() { p.teardown(t) })
	p.startDaemon(t)
	return p
}

func (p *plugin) startDaemon(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(env.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start securevol serve: %v", err)
	}
	p.daemon, p.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(p.exited)
	eventually(t, 20*time.Second, "securevol serve to answer on "+legacySocket, func() error {
		select {
		case <-p.exited:
			t.Fatalf("securevol serve exited at start:\n%s", tail(p.logs(), 30))
		default:
		}
		return socketAnswers(legacySocket)
	})
}

// socketAnswers checks that a volume plugin answers Plugin.Activate on sock.
func socketAnswers(sock string) error {
	res, err := testenv.UnixClient(sock, 2*time.Second).Post("http://plugin/Plugin.Activate", "application/vnd.docker.plugins.v1+json", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !bytes.Contains(b, []byte("VolumeDriver")) {
		return fmt.Errorf("Plugin.Activate on %s: %s %s", sock, res.Status, b)
	}
	return nil
}

// logs returns the plugin's log so far: the legacy daemon's file, or the
// lines dockerd's log tagged with the managed plugin's ID.
func (p *plugin) logs() string {
	if !p.managed {
		b, _ := os.ReadFile(p.logPath)
		return string(b)
	}
	var b strings.Builder
	for _, l := range strings.Split(p.dockerdLog(), "\n") {
		if strings.Contains(l, "plugin="+p.id) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (p *plugin) dockerdLog() string {
	if p.dockerLog != "" {
		b, _ := os.ReadFile(p.dockerLog)
		return string(b)
	}
	if underSystemd() {
		out, _ := command(nil, "", "journalctl", "-u", "docker.service", "-o", "cat", "--no-pager")
		return out
	}
	return ""
}

// logMark and logsSince cut out the log of one step.
func (p *plugin) logMark() int { return len(p.logs()) }

func (p *plugin) logsSince(mark int) string {
	l := p.logs()
	if mark > len(l) {
		return l
	}
	return l[mark:]
}

// pid returns the running daemon's process ID.
func (p *plugin) pid(t testing.TB) int {
	t.Helper()
	if !p.managed {
		return p.daemon.Process.Pid
	}
	pid := p.managedPid()
	if pid == 0 {
		t.Fatalf("no /securevol process in plugin %s's cgroup", p.id)
	}
	return pid
}

// managedPid finds the managed plugin's process: it runs in a cgroup named
// by the plugin's ID, as /securevol. 0 if none runs.
func (p *plugin) managedPid() int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		cg, err := os.ReadFile(dir + "/cgroup")
		if err != nil || !bytes.Contains(cg, []byte(p.id)) {
			continue
		}
		cmd, _ := os.ReadFile(dir + "/cmdline")
		if bytes.HasPrefix(cmd, []byte("/securevol\x00serve")) {
			var pid int
			fmt.Sscanf(filepath.Base(dir), "%d", &pid)
			return pid
		}
	}
	return 0
}

// kill9 kills the daemon with SIGKILL, then waits until it serves again:
// the engine restarts a managed plugin on its own; the legacy daemon is
// started again by the test, as systemd's Restart=always would.
func (p *plugin) kill9(t testing.TB) {
	t.Helper()
	old := p.pid(t)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", old, err)
	}
	if p.managed {
		var now int
		eventually(t, 30*time.Second, "the engine to restart the plugin", func() error {
			if now = p.managedPid(); now == 0 || now == old {
				return fmt.Errorf("plugin process not back (old pid %d)", old)
			}
			return nil
		})
		t.Logf("kill -9 %d: the engine restarted the plugin as pid %d", old, now)
		return
	}
	<-p.exited
	p.startDaemon(t)
	t.Logf("kill -9 %d: restarted the daemon as pid %d", old, p.pid(t))
}

// backingDir returns the host folder holding volume vol's ciphertext
// (state/volumes/<id>, the id from Status).
func (p *plugin) backingDir(t testing.TB, vol string) string {
	t.Helper()
	id := inspectVolume(t, vol).statusString(t, "id")
	dir := filepath.Join(p.stateDir, "volumes", id)
	if _, err := os.Stat(filepath.Join(dir, crypto.HeaderName)); err != nil {
		t.Fatalf("volume %s: no backing folder with a header at %s: %v", vol, dir, err)
	}
	return dir
}

// wrappedKey returns the volume key as wrapped in the backing folder's
// header: not a secret by itself, but nothing should echo it either, and
// after a Remove it must be gone.
func wrappedKey(t testing.TB, backing string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(backing, crypto.HeaderName))
	if err != nil {
		t.Fatal(err)
	}
	h, err := crypto.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.WrappedKey) < 32 {
		t.Fatalf("%s: wrapped key of %d bytes", backing, len(h.WrappedKey))
	}
	return h.WrappedKey
}

// masterKey reads the master key the daemon generated on first start.
func (p *plugin) masterKey(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(p.keyDir, "master.key")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the daemon generated no master key at %s: %v", path, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	k, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encodings are the forms a leaked key would take in text.
func encodings(b []byte) []string {
	return []string{
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		string(b),
	}
}

// teardown removes every volume of the plugin, then the plugin (or stops
// the daemon), checks nothing stays mounted, and deletes the temp folder.
func (p *plugin) teardown(t testing.TB) {
	if t.Failed() {
		t.Logf("%s log (last 80 lines):\n%s", p, tail(p.logs(), 80))
	}
	if out, err := dockerTry("ps", "-aq", "--filter", "name="+prefix); err == nil && out != "" {
		dockerTry(append([]string{"rm", "-f", "-v"}, strings.Fields(out)...)...)
	}
	if out, err := dockerTry("volume", "ls", "-q", "--filter", "driver="+p.driver); err == nil {
		for _, v := range strings.Fields(out) {
			if _, err := dockerTry("volume", "rm", v); err != nil {
				t.Errorf("cleanup: docker volume rm %s: %v", v, err)
				dockerTry("volume", "rm", "-f", v)
			}
		}
	}
	var mountRoot string
	if p.managed {
		if p.id != "" {
			dockerTry("plugin", "disable", "-f", p.name)
			dockerTry("plugin", "rm", "-f", p.name)
			mountRoot = filepath.Join("/var/lib/docker/plugins", p.id)
		}
	} else if p.daemon != nil {
		mountRoot = filepath.Join(p.tmp, "mnt")
		p.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if _, err := os.Stat(legacySocket); err == nil {
				t.Errorf("securevol serve left %s behind after SIGTERM", legacySocket)
				os.Remove(legacySocket)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("securevol serve still runs 20 s after SIGTERM; killing it")
			p.daemon.Process.Kill()
			<-p.exited
		}
	}
	if mountRoot != "" {
		if ms := mountsUnder(mountRoot); len(ms) > 0 {
			t.Errorf("still mounted after teardown: %v", ms)
			for _, m := range ms {
				syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
	if err := os.RemoveAll(p.tmp); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	// The engine keeps its client for a legacy plugin it used until it
	// restarts, and the dead client (of legacyName: never the real
	// securevol's) slows docker volume ls and would shadow a managed plugin
	// of that name: leave the engine as it was.
	if !p.managed && p.daemon != nil && restartForbidden(t) == "" {
		restartDockerd(t)
	}
}

// mountsUnder lists FUSE mounts at or below root in the host's namespace.
func mountsUnder(root string) []string {
	ms, _ := mountinfo.Read()
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.FSType, "fuse") && mountinfo.IsUnder(m.Mountpoint, root) {
			out = append(out, m.Mountpoint)
		}
	}
	return out
}

// findPlaintext walks root and returns where any needle appears, in a file
// or folder name or in a file's bytes.
func findPlaintext(t testing.TB, root string, needles ...string) []string {
	t.Helper()
	var hits []string
	var files int
	var rootDev uint64
	if fi, err := os.Stat(root); err == nil {
		rootDev = fi.Sys().(*syscall.Stat_t).Dev
	}
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Sys().(*syscall.Stat_t).Dev != rootDev {
			return filepath.SkipDir // never read through a mount
		}
		for _, n := range needles {
			if strings.Contains(fi.Name(), n) {
				hits = append(hits, fmt.Sprintf("name %s contains %q", path, n))
			}
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				hits = append(hits, fmt.Sprintf("file %s contains %q", path, n))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	if files == 0 {
		t.Fatalf("scan %s: no files at all (wrong folder?)", root)
	}
	return hits
}

// dirBytes sums the sizes of the regular files under dir.
func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// pluginInspect returns `docker plugin inspect` of the managed plugin.
func (p *plugin) inspectRaw(t testing.TB) string {
	t.Helper()
	raw := docker(t, "plugin", "inspect", p.name)
	var v []map[string]any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("docker plugin inspect: %v", err)
	}
	return raw
}
