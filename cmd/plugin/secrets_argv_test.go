package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
)

// proc is one process as any local user sees it in the process list
// (cmdline), plus what root sees (environ).
type proc struct {
	pid, ppid int
	cmdline   []byte
	environ   []byte
}

// processes reads every process on the host.
func processes(t *testing.T) map[int]proc {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		out[pid] = proc{pid: pid, ppid: ppid, cmdline: cmdline, environ: environ}
	}
	return out
}

// family returns root and every process descended from it.
func family(ps map[int]proc, root int) map[int]bool {
	fam := map[int]bool{root: true}
	for grew := true; grew; {
		grew = false
		for pid, p := range ps {
			if !fam[pid] && fam[p.ppid] {
				fam[pid], grew = true, true
			}
		}
	}
	return fam
}

// secretForms are the ways a secret could be spelled on a command line.
func secretForms(secret []byte) [][]byte {
	forms := [][]byte{secret}
	if len(secret) == 32 {
		h := hex.EncodeToString(secret)
		forms = append(forms, []byte(h), []byte(strings.ToUpper(h)),
			[]byte(base64.RawStdEncoding.EncodeToString(secret)), []byte(base64.RawURLEncoding.EncodeToString(secret)))
	}
	return forms
}

// leaks lists where a form of the secret shows: in any process's command
// line, and in the environment of the daemon's family.
func leaks(ps map[int]proc, fam map[int]bool, forms [][]byte) []string {
	var out []string
	for pid, p := range ps {
		for _, f := range forms {
			if bytes.Contains(p.cmdline, f) {
				out = append(out, fmt.Sprintf("pid %d cmdline %q", pid, p.cmdline))
			}
			if fam[pid] && bytes.Contains(p.environ, f) {
				out = append(out, fmt.Sprintf("pid %d (daemon family) environ", pid))
			}
		}
	}
	return out
}

// checkNoLeak scans every process while the daemon runs. It fails the test
// if the daemon is not among them (the scan would prove nothing).
func checkNoLeak(t *testing.T, daemonPid int, forms [][]byte, when string) map[int]proc {
	t.Helper()
	ps := processes(t)
	if _, ok := ps[daemonPid]; !ok {
		t.Fatalf("%s: daemon pid %d not in /proc", when, daemonPid)
	}
	fam := family(ps, daemonPid)
	if l := leaks(ps, fam, forms); len(l) > 0 {
		t.Fatalf("%s: the secret is visible:\n%s", when, strings.Join(l, "\n"))
	}
	return ps
}

// No secret of ours (master key, passphrase) is ever in the argv of the
// daemon or of a process it starts, nor in their environment: checked by
// reading /proc of every process while the key command runs, once the
// daemon serves, and while a volume is mounted.
func TestNoSecretInProcessList(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)

	t.Run("key-command", func(t *testing.T) {
		// Files are written before t.Parallel: a child forked by another
		// subtest meanwhile would hold the script open (ETXTBSY at exec).
		d := newServeProc(t, bin)
		key := randBytes(32)
		forms := secretForms(key)
		keyHex := filepath.Join(d.dir, "key.hex")
		os.WriteFile(keyHex, []byte(hex.EncodeToString(key)+"\n"), 0o600)
		// The command holds still until the test has looked at every
		// process, then prints the key from a file (cat's argv: a path).
		script := filepath.Join(d.dir, "getkey")
		os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
d=%s
printf '%%s\n' "$@" >$d/args
echo $PPID >$d/ppid.tmp && mv $d/ppid.tmp $d/ppid
i=0
while [ ! -e $d/go ] && [ $i -lt 300 ]; do sleep 0.01; i=$((i+1)); done
exec cat $d/key.hex
`, d.dir)), 0o700)
		// What the admin writes is passed as is: the command gets no
		// arguments from the daemon.
		d.extra = []string{"--key-command", script + " --vault-path secret/securevol"}
		t.Parallel()
		started := make(chan error, 1)
		go func() { started <- d.tryStart() }()

		var daemonPid int
		for i := 0; daemonPid == 0; i++ {
			if b, err := os.ReadFile(filepath.Join(d.dir, "ppid")); err == nil {
				daemonPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
			if i > 500 {
				t.Fatal("the key command did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The scan finds a key on a command line when there is one.
		ctl := exec.Command("sh", "-c", "sleep 10", string(forms[1]))
		if err := ctl.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if l := leaks(processes(t), nil, forms); len(l) == 0 {
			t.Error("the scan missed a key on a command line")
		}
		ctl.Process.Kill()
		ctl.Wait()

		ps := checkNoLeak(t, daemonPid, forms, "while the key command runs")
		running := false
		for pid := range family(ps, daemonPid) {
			if bytes.Contains(ps[pid].cmdline, []byte(script)) && pid != daemonPid {
				running = true
			}
		}
		if !running {
			t.Fatal("the key command was not among the daemon's children during the scan")
		}
		os.WriteFile(filepath.Join(d.dir, "go"), nil, 0o600)
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		if args, _ := os.ReadFile(filepath.Join(d.dir, "args")); string(args) != "--vault-path\nsecret/securevol\n" {
			t.Fatalf("key command arguments %q, want only the admin's", args)
		}
		checkServing(t, d, daemonPid, forms)
	})

	t.Run("passphrase-file", func(t *testing.T) {
		t.Parallel()
		d := newServeProc(t, bin)
		pass := []byte("correct horse battery staple " + hex.EncodeToString(randBytes(8)))
		pf := filepath.Join(d.dir, "pass")
		os.WriteFile(pf, append(pass, '\n'), 0o600)
		d.extra = []string{"--passphrase-file", pf}
		d.start()
		checkServing(t, d, d.cmd.Process.Pid, [][]byte{pass})
	})

	t.Run("key-file", func(t *testing.T) {
		t.Parallel()
		d := newServeProc(t, bin)
		d.start()
		key, err := os.ReadFile(d.keyFile)
		if err != nil || len(key) != 32 {
			t.Fatalf("generated key: %d bytes, %v", len(key), err)
		}
		checkServing(t, d, d.cmd.Process.Pid, secretForms(key))
	})
}

// checkServing scans once the daemon serves and again while it holds a
// FUSE mount.
func checkServing(t *testing.T, d *serveProc, pid int, forms [][]byte) {
	t.Helper()
	checkNoLeak(t, pid, forms, "serving")
	d.must("/VolumeDriver.Create", map[string]any{"Name": "argv"}, nil)
	mp := d.mount("argv", "c1")
	writeSynced(t, filepath.Join(mp, "f"), []byte("data"))
	checkNoLeak(t, pid, forms, "with a volume mounted")
	d.stop()
	for _, f := range forms {
		if strings.Contains(d.logs.String(), string(f)) {
			t.Fatal("the secret is in the log")
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
