package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cmdTimeout bounds every command: the engine's own plugin timeouts are
// 1-2 minutes, so a hang beyond that is a bug to report, not to wait out.
const cmdTimeout = 3 * time.Minute

// prefix marks everything the tests create in the engine.
const prefix = "sve2e-"

// execErr carries a failed command's output into the error text.
type execErr struct {
	cmd    string
	err    error
	stderr string
}

func (e *execErr) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, strings.TrimSpace(e.stderr))
}

// command runs name with args and returns its standard output.
func command(env []string, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &execErr{cmd: name + " " + strings.Join(args, " "), err: err, stderr: stderr.String() + stdout.String()}
	}
	return stdout.String(), nil
}

// dockerTry runs the docker CLI and returns its output, trimmed.
func dockerTry(args ...string) (string, error) {
	out, err := command(nil, "", "docker", args...)
	return strings.TrimSpace(out), err
}

// docker runs the docker CLI and fails t if it fails.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerTry(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerFails runs the docker CLI, fails t if it succeeds, and returns
// what it printed.
func dockerFails(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerTry(args...)
	if err == nil {
		t.Fatalf("docker %s succeeded (output %q); want an error", strings.Join(args, " "), out)
	}
	var e *execErr
	if errors.As(err, &e) {
		return strings.TrimSpace(e.stderr) // what the user sees, without our command line
	}
	return err.Error()
}

// script runs one of the repository's scripts with extra environment.
func script(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(env, "", filepath.Join(need(t).root, "scripts", name), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// uniq returns a fresh name for a test resource.
func uniq(what string) string { return prefix + what + "-" + randHex(4) }

// newVolume creates a volume on p, removed when the test ends.
func newVolume(t testing.TB, p *plugin, opts ...string) string {
	t.Helper()
	name := uniq("vol")
	args := []string{"volume", "create", "-d", p.name}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	docker(t, append(args, name)...)
	t.Cleanup(func() { dockerTry("volume", "rm", "-f", name) })
	return name
}

// run runs a container to completion (removed afterwards) and returns its
// output.
func run(t testing.TB, args ...string) string {
	t.Helper()
	return docker(t, append([]string{"run", "--rm", "--network", "none"}, args...)...)
}

// start starts a detached container, removed when the test ends, and
// returns its name. args are docker run arguments (image and command last).
func start(t testing.TB, args ...string) string {
	t.Helper()
	name := uniq("ctr")
	t.Cleanup(func() { dockerTry("rm", "-f", "-v", name) })
	docker(t, append([]string{"run", "-d", "--name", name}, args...)...)
	return name
}

// runSh runs script with sh -eu in a test-image container (removed
// afterwards) given docker run options opts, and returns its output.
func runSh(t testing.TB, script string, opts ...string) string {
	t.Helper()
	args := append(append([]string{}, opts...), need(t).image)
	return run(t, append(args, sh(script)...)...)
}

// startSleeper starts a test-image container that sleeps until removed.
func startSleeper(t testing.TB, opts ...string) string {
	t.Helper()
	return start(t, append(append([]string{}, opts...), need(t).image, "sleep", "3600")...)
}

// inspectVolume returns `docker volume inspect` of name.
func inspectVolume(t testing.TB, name string) volumeInfo {
	t.Helper()
	var vs []volumeInfo
	raw := docker(t, "volume", "inspect", name)
	if err := json.Unmarshal([]byte(raw), &vs); err != nil || len(vs) != 1 {
		t.Fatalf("docker volume inspect %s: %v: %s", name, err, raw)
	}
	vs[0].raw = raw
	return vs[0]
}

type volumeInfo struct {
	Name       string
	Driver     string
	Mountpoint string
	CreatedAt  string
	Options    map[string]string
	Status     map[string]any
	raw        string
}

// statusInt reads a number from Status.
func (v volumeInfo) statusInt(t testing.TB, key string) int {
	t.Helper()
	f, ok := v.Status[key].(float64)
	if !ok {
		t.Fatalf("volume %s: Status[%q] = %v, want a number (Status %v)", v.Name, key, v.Status[key], v.Status)
	}
	return int(f)
}

func (v volumeInfo) statusString(t testing.TB, key string) string {
	t.Helper()
	s, ok := v.Status[key].(string)
	if !ok || s == "" {
		t.Fatalf("volume %s: Status[%q] = %v, want a string (Status %v)", v.Name, key, v.Status[key], v.Status)
	}
	return s
}

// volumesOf lists the engine's volumes whose driver is driver.
func volumesOf(t testing.TB, driver string) []string {
	t.Helper()
	out := docker(t, "volume", "ls", "-q", "--filter", "driver="+driver)
	return strings.Fields(out)
}

// eventually retries f until it succeeds or d has passed.
func eventually(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dockerdProc is the running engine: enough to stop it and start it again
// the same way it was started.
type dockerdProc struct {
	pid     int
	argv    []string
	environ []string
	dir     string
	logPath string // where its stdout and stderr go ("" if not a file)
}

func findDockerd() (*dockerdProc, error) {
	b, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		return nil, fmt.Errorf("find dockerd: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("find dockerd: /var/run/docker.pid: %w", err)
	}
	proc := fmt.Sprintf("/proc/%d", pid)
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("find dockerd (pid %d): %w", pid, err)
	}
	environ, _ := os.ReadFile(proc + "/environ")
	d := &dockerdProc{
		pid:     pid,
		argv:    strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"),
		environ: strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00"),
	}
	// Its working directory may be gone since (" (deleted)"): restart
	// it in / then, as a chdir into a missing directory fails the exec.
	d.dir = "/"
	if cwd, err := os.Readlink(proc + "/cwd"); err == nil {
		if fi, err := os.Stat(cwd); err == nil && fi.IsDir() {
			d.dir = cwd
		}
	}
	if p, err := os.Readlink(proc + "/fd/2"); err == nil {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			d.logPath = p
		}
	}
	return d, nil
}

// underSystemd reports whether systemd runs this machine (then it, not the
// test, starts and stops dockerd).
func underSystemd() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// restartDockerd stops the engine the tests run against and starts it
// again, as systemd would at a host restart or a package upgrade: with the
// same command line, environment and log file. It returns when the engine
// answers again.
func restartDockerd(t testing.TB) {
	t.Helper()
	begin := time.Now()
	if underSystemd() {
		if out, err := command(nil, "", "systemctl", "restart", "docker"); err != nil {
			t.Fatalf("systemctl restart docker: %v %s", err, out)
		}
	} else {
		d, err := findDockerd()
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(d.pid, syscall.SIGTERM); err != nil {
			t.Fatalf("stop dockerd (pid %d): %v", d.pid, err)
		}
		waitGone(t, d.pid, time.Minute)
		logPath := d.logPath
		if logPath == "" {
			logPath = filepath.Join(os.TempDir(), "securevol-e2e-dockerd.log")
		}
		logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(d.argv[0], d.argv[1:]...)
		cmd.Env, cmd.Dir = d.environ, d.dir
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own session: the engine must outlive the test binary.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %v: %v", d.argv, err)
		}
		go cmd.Wait() // reap it if it dies while the tests run
	}
	eventually(t, time.Minute, "docker info after restarting dockerd", func() error {
		_, err := dockerTry("info", "--format", "{{.ServerVersion}}")
		return err
	})
	t.Logf("dockerd restarted in %v", time.Since(begin).Round(time.Millisecond))
}

// waitGone waits for process pid to exit.
func waitGone(t testing.TB, pid int, d time.Duration) {
	t.Helper()
	eventually(t, d, fmt.Sprintf("process %d to exit", pid), func() error {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		// A zombie (our own child not yet reaped) has exited too.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				return nil
			}
		}
		return fmt.Errorf("still running")
	})
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
