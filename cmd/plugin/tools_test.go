package main

import (
	"github.com/securevol/securevol/internal/mountinfo"

	"bytes"
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

func securevol(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func isMounted(t *testing.T, mnt string) bool {
	m, err := mountinfo.At(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return m != nil
}

// TestMountCycle drives the real binary: key generate, init, a wrong key,
// mount, write, SIGTERM, fsck clean, tamper, fsck reports it.
func TestMountCycle(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)
	dir := t.TempDir()
	key, other := filepath.Join(dir, "k"), filepath.Join(dir, "other")
	enc, mnt := filepath.Join(dir, "enc"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	if out, code := securevol(t, bin, "key", "generate", key); code != 0 {
		t.Fatalf("key generate: %d %s", code, out)
	}
	securevol(t, bin, "key", "generate", other)
	if out, code := securevol(t, bin, "key", "generate", key); code == 0 || !strings.Contains(out, "exists") {
		t.Fatalf("key generate over an existing key: %d %s", code, out)
	}
	os.Chmod(other, 0o644)
	if out, code := securevol(t, bin, "init", "--key-file", other, enc); code != 1 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("world-readable key: %d %s", code, out)
	}
	os.Chmod(other, 0o600)
	if out, code := securevol(t, bin, "init", "--key-file", key, enc); code != 0 {
		t.Fatalf("init: %d %s", code, out)
	}
	if out, code := securevol(t, bin, "mount", "--key-file", other, enc, mnt); code != 1 || !strings.Contains(out, "wrong key") {
		t.Fatalf("mount with the wrong key: %d %s", code, out)
	}
	if isMounted(t, mnt) {
		t.Fatal("mounted despite a wrong key")
	}

	m := exec.Command(bin, "mount", "--key-file", key, enc, mnt)
	var logs bytes.Buffer
	m.Stdout, m.Stderr = &logs, &logs
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Process.Kill(); syscall.Unmount(mnt, syscall.MNT_DETACH) })
	for i := 0; i < 100 && !isMounted(t, mnt); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if !isMounted(t, mnt) {
		t.Fatalf("not mounted: %s", logs.String())
	}
	payload := bytes.Repeat([]byte("cli-marker-payload "), 1000)
	if err := os.MkdirAll(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "sub", "file.bin"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mount exited with %v: %s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mount did not exit on SIGTERM")
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after SIGTERM")
	}

	if out, code := securevol(t, bin, "fsck", "--key-file", key, enc); code != 0 || !strings.Contains(out, "0 problems") {
		t.Fatalf("fsck of a clean directory: %d %s", code, out)
	}
	// Flip one byte of the file's second block.
	var victim string
	filepath.Walk(enc, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > crypto.CipherBlockSize {
			victim = p
		}
		return nil
	})
	if victim == "" {
		t.Fatal("no ciphertext file found")
	}
	f, _ := os.OpenFile(victim, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, crypto.BlockOffset(1)+40)
	f.Close()
	out, code := securevol(t, bin, "fsck", "--key-file", key, enc)
	if code != 1 || !strings.Contains(out, "sub/file.bin") || !strings.Contains(out, "block 1") {
		t.Fatalf("fsck of a tampered directory: %d %s", code, out)
	}
}
