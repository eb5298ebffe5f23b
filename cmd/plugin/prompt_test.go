package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/ptytest"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/keyfile"
)

// typeAt runs the binary with a terminal as its standard input and types
// each answer once its prompt is up (label shown, echo off). It returns
// the exit status and what the command wrote.
func typeAt(t *testing.T, bin string, answers []string, args ...string) (int, string) {
	t.Helper()
	term, tty := ptytest.Open(t)
	var out testenv.SyncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for i, a := range answers {
		waitFor(t, exited, func() bool {
			tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			return strings.Count(out.String(), "assphrase: ") > i && err == nil && tio.Lflag&unix.ECHO == 0
		}, &out)
		term.WriteString(a + "\n")
	}
	select {
	case err := <-exited:
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, out.String()
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("securevol %v did not finish:\n%s", args, out.String())
		return 0, ""
	}
}

func waitFor(t *testing.T, exited chan error, cond func() bool, out *testenv.SyncBuffer) {
	t.Helper()
	for i := 0; !cond(); i++ {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("exited (%v) before the prompt:\n%s", err, out.String())
		default:
		}
		if i > 1000 {
			t.Fatalf("no prompt within 10 s:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With no key flag on a terminal, init asks for a passphrase twice and
// fsck once; a typo on init makes nothing; a pipe is never asked.
func TestPassphrasePrompt(t *testing.T) {
	bin := buildServeBinary(t)
	dir := t.TempDir()
	enc := filepath.Join(dir, "enc")

	if code, out := typeAt(t, bin, []string{"typed words", "typed wrods"}, "init", enc); code != 1 || !strings.Contains(out, "passphrases typed differ") {
		t.Fatalf("init with a typo: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(enc, "securevol.conf")); err == nil {
		t.Fatal("init made a directory despite the typo")
	}
	code, out := typeAt(t, bin, []string{"typed words", "typed words"}, "init", enc)
	if code != 0 || !strings.Contains(out, "Repeat passphrase: ") || !strings.Contains(out, "initialised encrypted directory") {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "typed words") {
		t.Fatalf("the passphrase was shown:\n%s", out)
	}
	if code, out := typeAt(t, bin, []string{"typed words"}, "fsck", enc); code != 0 || !strings.Contains(out, "0 problems") || strings.Contains(out, "Repeat") {
		t.Fatalf("fsck with the typed passphrase: exit %d\n%s", code, out)
	}
	if code, out := typeAt(t, bin, []string{"other words"}, "fsck", enc); code != 1 || !strings.Contains(out, "wrong key") {
		t.Fatalf("fsck with a wrong passphrase: exit %d\n%s", code, out)
	}
	// The same directory opens with the passphrase from a file.
	pf := filepath.Join(dir, "pass")
	os.WriteFile(pf, []byte("typed words\n"), 0o600)
	if out, code := securevol(t, bin, "fsck", "--passphrase-file", pf, enc); code != 0 {
		t.Fatalf("fsck --passphrase-file: %d %s", code, out)
	}
	// Standard input from a pipe: no prompt, and the flags are named.
	if out, code := securevol(t, bin, "fsck", enc); code != 2 || !strings.Contains(out, "--key-command") {
		t.Fatalf("fsck from a pipe: %d %s", code, out)
	}
}

// --key-command works on the tools as on serve: a directory made with the
// command's key opens with a key file holding the same key.
func TestToolsKeyCommand(t *testing.T) {
	bin := buildServeBinary(t)
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0x42}, 32)
	script := filepath.Join(dir, "getkey")
	os.WriteFile(script, []byte("#!/bin/sh\necho "+hex.EncodeToString(key)+"\n"), 0o700)
	kf := filepath.Join(dir, "key")
	if err := keyfile.WriteKeyFile(kf, key); err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(dir, "enc")
	if out, code := securevol(t, bin, "init", "--key-command", script, enc); code != 0 {
		t.Fatalf("init --key-command: %d %s", code, out)
	}
	if out, code := securevol(t, bin, "fsck", "--key-file", kf, enc); code != 0 || !strings.Contains(out, "0 problems") {
		t.Fatalf("fsck --key-file of a directory made with --key-command: %d %s", code, out)
	}
	if out, code := securevol(t, bin, "fsck", "--key-command", script, enc); code != 0 {
		t.Fatalf("fsck --key-command: %d %s", code, out)
	}
}
