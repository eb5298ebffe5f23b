package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/securevol/securevol/internal/mountinfo"
)

// filesystem is one column of the table: a directory the workloads run in
// and, for the encrypted ones, the daemon serving it.
type filesystem struct {
	name string
	base string // scratch/<name>: everything this filesystem owns
	root string // where the workloads run: the plain dir or the mountpoint
	cfg  config

	cmd     *exec.Cmd     // the mount daemon; nil for plain
	exited  chan struct{} // closed when cmd has exited
	waitErr error
	log     string // the daemon's stdout+stderr
}

func newFilesystem(name string, cfg config) (*filesystem, error) {
	f := &filesystem{name: name, base: filepath.Join(cfg.scratch, name), cfg: cfg}
	switch name {
	case "plain":
		f.root = filepath.Join(f.base, "dir")
	case "securevol", "gocryptfs", "baseline":
		f.root = filepath.Join(f.base, "mnt")
	default:
		return nil, fmt.Errorf("unknown filesystem %q (want plain, securevol, baseline or gocryptfs)", name)
	}
	return f, nil
}

// setup creates fresh backing folders and mounts.
func (f *filesystem) setup(ctx context.Context) error {
	if err := os.RemoveAll(f.base); err != nil {
		return fmt.Errorf("clean %s: %w", f.base, err)
	}
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		return err
	}
	switch f.name {
	case "plain":
		return nil
	case "securevol":
		return f.setupSecurevol(ctx, f.cfg.securevol)
	case "baseline":
		return f.setupSecurevol(ctx, f.cfg.baseline)
	case "gocryptfs":
		return f.setupGocryptfs(ctx)
	}
	return nil
}

// setupSecurevol mounts a fresh volume with the securevol binary bin (the
// build under test, or -baseline's build of another commit).
func (f *filesystem) setupSecurevol(ctx context.Context, bin string) error {
	key := filepath.Join(f.base, "master.key")
	cipher := filepath.Join(f.base, "cipher")
	if err := os.Mkdir(cipher, 0o700); err != nil {
		return err
	}
	if err := runQuiet(ctx, bin, "key", "generate", key); err != nil {
		return err
	}
	if err := runQuiet(ctx, bin, "init", "--key-file", key, cipher); err != nil {
		return err
	}
	args := append([]string{"mount", "--key-file", key}, f.cfg.mountArgs...)
	if f.cfg.opcounts {
		args = append(args, "--debug")
	}
	args = append(args, cipher, f.root)
	return f.startDaemon(ctx, bin, args...)
}

func (f *filesystem) setupGocryptfs(ctx context.Context) error {
	pass := filepath.Join(f.base, "passfile")
	cipher := filepath.Join(f.base, "cipher")
	if err := os.Mkdir(cipher, 0o700); err != nil {
		return err
	}
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return err
	}
	if err := os.WriteFile(pass, []byte(hex.EncodeToString(pw)+"\n"), 0o600); err != nil {
		return err
	}
	// Default options throughout: what a user of Debian's gocryptfs gets.
	if err := runQuiet(ctx, f.cfg.gocryptfs, "-init", "-q", "-passfile", pass, cipher); err != nil {
		return err
	}
	args := []string{"-fg", "-q", "-passfile", pass}
	if f.cfg.otherUsers {
		// Also turns on default_permissions, as securevol always does.
		args = append(args, "-allow_other")
	}
	if f.cfg.opcounts {
		args = append(args, "-fusedebug")
	}
	return f.startDaemon(ctx, f.cfg.gocryptfs, append(args, cipher, f.root)...)
}

// startDaemon runs a foreground mount command and waits until its mount
// shows up in /proc/self/mountinfo.
func (f *filesystem) startDaemon(ctx context.Context, bin string, args ...string) error {
	f.log = filepath.Join(f.base, "mount.log")
	logf, err := os.Create(f.log)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: Ctrl-C reaches only us, and we unmount in
		// order. Pdeathsig covers a SIGKILLed fsbench.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	logf.Close()
	f.cmd = cmd
	f.exited = make(chan struct{})
	go func() {
		f.waitErr = cmd.Wait()
		close(f.exited)
	}()

	deadline := time.NewTimer(f.cfg.mountTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := mountinfo.At(f.root)
		if err != nil {
			return err
		}
		if m != nil {
			if !strings.HasPrefix(m.FSType, "fuse") {
				return fmt.Errorf("%s is mounted as %s, not a FUSE filesystem", f.root, m.FSType)
			}
			return nil
		}
		select {
		case <-f.exited:
			return fmt.Errorf("%s exited before mounting (%v): %s", filepath.Base(bin), f.waitErr, f.logTail())
		case <-deadline.C:
			return fmt.Errorf("%s did not mount %s within %v: %s", filepath.Base(bin), f.root, f.cfg.mountTimeout, f.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (f *filesystem) logTail() string {
	b, _ := os.ReadFile(f.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// teardown stops the daemon the way a user would (SIGTERM, which both
// securevol and gocryptfs answer by unmounting) and makes sure the mount
// is gone even if it did not.
func (f *filesystem) teardown() error {
	if f.cmd == nil {
		return nil
	}
	var problems []string
	select {
	case <-f.exited:
		problems = append(problems, fmt.Sprintf("daemon had exited early (%v): %s", f.waitErr, f.logTail()))
	default:
		f.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.exited:
		case <-time.After(20 * time.Second):
			problems = append(problems, "daemon did not exit within 20s of SIGTERM; killed")
		}
	}
	if m, _ := mountinfo.At(f.root); m != nil {
		problems = append(problems, "mount was still there after the daemon exited; detached it")
		if err := syscall.Unmount(f.root, syscall.MNT_DETACH); err != nil {
			problems = append(problems, fmt.Sprintf("umount -l %s: %v", f.root, err))
		}
	}
	select {
	case <-f.exited:
	default:
		f.cmd.Process.Kill()
		<-f.exited
	}
	f.cmd = nil
	if len(problems) > 0 {
		return fmt.Errorf("teardown: %s", strings.Join(problems, "; "))
	}
	return nil
}

// cpuSeconds is the daemon's user and system CPU time so far; 0 for plain.
func (f *filesystem) cpuSeconds() float64 {
	if f.cmd == nil || f.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(f.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// runQuiet runs a set-up command, returning its output only on failure.
func runQuiet(ctx context.Context, bin string, args ...string) error {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// version runs bin with args and returns the first line of its output.
func version(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func versions(cfg config, fss []*filesystem) []string {
	var v []string
	uname := version("uname", "-srm")
	v = append(v, "kernel: "+uname)
	if m, err := findMountContaining(cfg.scratch); err == nil && m != nil {
		v = append(v, fmt.Sprintf("scratch: %s (%s on %s, %s)", cfg.scratch, m.FSType, m.Source, m.Mountpoint))
	}
	for _, f := range fss {
		switch f.name {
		case "securevol":
			v = append(v, "securevol: "+version(cfg.securevol, "version"))
		case "baseline":
			v = append(v, "baseline: "+version(cfg.baseline, "version"))
		case "gocryptfs":
			v = append(v, "gocryptfs: "+version(cfg.gocryptfs, "-version"))
		}
	}
	v = append(v, "tar: "+version("tar", "--version"), "ls: "+version("ls", "--version"))
	return v
}

// logSize is how far the daemon's log has grown; with -opcounts the
// requests of one step are the log lines between two sizes.
func (f *filesystem) logSize() int64 {
	if f.log == "" {
		return 0
	}
	st, err := os.Stat(f.log)
	if err != nil {
		return 0
	}
	return st.Size()
}

// countOps counts the FUSE requests go-fuse logged ("rx 12: LOOKUP ...")
// between two log offsets.
func (f *filesystem) countOps(from, to int64) (map[string]int, error) {
	if to <= from {
		return nil, nil
	}
	fd, err := os.Open(f.log)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	b := make([]byte, to-from)
	if _, err := fd.ReadAt(b, from); err != nil {
		return nil, err
	}
	return parseOps(b), nil
}

func parseOps(b []byte) map[string]int {
	ops := map[string]int{}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		i := bytes.Index(line, []byte("rx "))
		if i < 0 {
			continue
		}
		rest := line[i+3:]
		j := bytes.Index(rest, []byte(": "))
		if j <= 0 || !isDigits(rest[:j]) {
			continue
		}
		rest = rest[j+2:]
		k := 0
		for k < len(rest) && (rest[k] >= 'A' && rest[k] <= 'Z' || rest[k] == '_') {
			k++
		}
		if k > 0 {
			ops[string(rest[:k])]++
		}
	}
	return ops
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
