package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/securevol/securevol/internal/testenv"
)

// writeFile0600 writes a secret or public file for the command line.
func writeFile0600(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// entries lists a folder's names ("" if it does not exist).
func entries(dir string) string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// The volume commands that move volumes, through the binary and two
// daemons with different master keys: export to a file sealed to a
// recipient and import with its identity; export to standard output
// sealed to a passphrase and import from standard input; clone; push and
// pull through a registry on loopback, whose storage never shows the
// plaintext; and the refusals, each with its hint, leaving nothing behind.
func TestVolumeTransferCommands(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)
	a, b := newServeProc(t, bin), newServeProc(t, bin)
	a.start()
	b.start()
	const secret = "plaintext-that-must-stay-inside"
	a.must("/VolumeDriver.Create", map[string]any{"Name": "db", "Opts": map[string]string{"uid": "999"}}, nil)
	mp := a.mount("db", "c1")
	if err := os.WriteFile(filepath.Join(mp, "secret-name.txt"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := writeFile0600(t, filepath.Join(dir, "key.txt"), "# created by the test\n"+id.String()+"\n")
	recFile := writeFile0600(t, filepath.Join(dir, "recipients.txt"), "# backup host\n"+id.Recipient().String()+"\n")
	passFile := writeFile0600(t, filepath.Join(dir, "pass"), "an export passphrase\n")
	file := filepath.Join(dir, "db.tar")
	run := func(want int, args ...string) string {
		t.Helper()
		out, code := securevol(t, bin, args...)
		if code != want {
			t.Fatalf("securevol %q: exit %d, want %d\n%s", args, code, want, out)
		}
		return out
	}
	readVolume := func(d *serveProc, name string) string {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(d.mount(name, "check"), "secret-name.txt"))
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}

	out := run(0, "volume", "export", "db", "-o", file, "--recipients-file", recFile, "--state-dir", a.stateDir)
	if !strings.Contains(out, "exported db") || !strings.Contains(out, "sealed to the recipients") {
		t.Fatalf("export said: %s", out)
	}
	if got := entries(filepath.Join(a.stateDir, "exports")); got != "" {
		t.Fatalf("exports folder after export: %q", got)
	}
	raw, err := os.ReadFile(file)
	if err != nil || bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte("secret-name")) {
		t.Fatalf("the archive file (%d bytes, %v) shows the plaintext", len(raw), err)
	}
	out = run(1, "volume", "import", "db", file, "--state-dir", b.stateDir)
	if !strings.Contains(out, "--identity FILE") {
		t.Fatalf("import without identity said: %s", out)
	}
	run(0, "volume", "import", "db", file, "--identity", idFile, "--state-dir", b.stateDir)
	if got := readVolume(b, "db"); got != secret {
		t.Fatalf("imported volume holds %q", got)
	}
	if got := entries(filepath.Join(b.stateDir, "imports")); got != "" {
		t.Fatalf("imports folder after import: %q", got)
	}

	// Standard output and input, with a passphrase.
	cmd := exec.Command(bin, "volume", "export", "db", "--passphrase-file", passFile, "--state-dir", a.stateDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stderr.String(), "exported db") {
		t.Fatalf("export to stdout: %v\n%s", err, stderr.String())
	}
	cmd = exec.Command(bin, "volume", "import", "db-pass", "-", "--passphrase-file", passFile, "--state-dir", b.stateDir)
	cmd.Stdin = &stdout
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import from stdin: %v\n%s", err, out)
	}
	if got := readVolume(b, "db-pass"); got != secret {
		t.Fatalf("imported volume holds %q", got)
	}

	run(0, "volume", "clone", "db", "db-copy", "--state-dir", a.stateDir)
	if got := readVolume(a, "db-copy"); got != secret {
		t.Fatalf("clone holds %q", got)
	}

	// Through a registry, twice: the second push uploads next to nothing.
	addr, storage := testenv.StartRegistry(t)
	ref := addr + "/backups/db:1"
	out = run(0, "volume", "push", "db", ref, "--recipient", id.Recipient().String(), "--state-dir", a.stateDir)
	if !strings.Contains(out, "pushed db to "+ref) {
		t.Fatalf("push said: %s", out)
	}
	out = run(0, "volume", "push", "db", addr+"/backups/db:2", "--recipient", id.Recipient().String(), "--state-dir", a.stateDir)
	if !strings.Contains(out, "uploaded 2 of") {
		t.Fatalf("second push (a new handover and config only) said: %s", out)
	}
	run(0, "volume", "pull", ref, "db-pulled", "--identity", idFile, "--state-dir", b.stateDir)
	if got := readVolume(b, "db-pulled"); got != secret {
		t.Fatalf("pulled volume holds %q", got)
	}
	grep := exec.Command("grep", "-rlaE", secret+"|secret-name", storage)
	if out, err := grep.CombinedOutput(); err == nil || len(out) > 0 {
		t.Fatalf("the registry's storage shows the plaintext: %s", out)
	}

	// Refusals: nothing half-made, a hint each.
	before := entries(filepath.Join(b.stateDir, "volumes"))
	stranger, _ := age.GenerateX25519Identity()
	strangerFile := writeFile0600(t, filepath.Join(dir, "stranger.txt"), stranger.String()+"\n")
	truncated := filepath.Join(dir, "truncated.tar")
	if err := os.WriteFile(truncated, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"import", "x1", file, "--identity", strangerFile}, 1, "sealed to other recipients"},
		{[]string{"import", "x1", truncated, "--identity", idFile}, 1, "damaged"},
		{[]string{"import", "db", file, "--identity", idFile}, 1, "already exists"},
		{[]string{"import", "x1", file, "--identity", passFile}, 2, "no valid age identity"},
		{[]string{"export", "db", "-o", filepath.Join(dir, "x.tar"), "--recipient", "age1x", "--passphrase-file", passFile}, 2, "not both"},
		{[]string{"export", "nosuch", "-o", filepath.Join(dir, "x.tar")}, 1, "no such volume"},
		{[]string{"clone", "nosuch", "x2"}, 1, "no such volume"},
	} {
		out := run(tc.code, append(append([]string{"volume"}, tc.args...), "--state-dir", b.stateDir)...)
		if !strings.Contains(out, tc.says) {
			t.Errorf("%q said %s, want %q", tc.args, out, tc.says)
		}
	}
	if got := entries(filepath.Join(b.stateDir, "volumes")); got != before {
		t.Errorf("volumes after the refusals: %s, was %s", got, before)
	}
	if out := run(1, "volume", "export", "db", "-o", filepath.Join(dir, "x.tar"), "--state-dir", t.TempDir()); !strings.Contains(out, "no securevol daemon answers") {
		t.Errorf("export without a daemon said %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.tar")); err == nil {
		t.Error("a failed export left its file")
	}
	if got := entries(dir); strings.Contains(got, ".x.tar") {
		t.Errorf("a failed export left a temporary file: %s", got)
	}
}
