package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// securevol man DIR writes a page per command, from the same definitions
// as the help, and the hidden command stays out of the help.
func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man8")
	if _, stderr, code := runCLI(t, "man", dir); code != 0 {
		t.Fatalf("man: exit %d %s", code, stderr)
	}
	for page, want := range map[string]string{
		"securevol.8":              "securevol-serve(8)",
		"securevol-serve.8":        "SECUREVOL_KEY_COMMAND",
		"securevol-mount.8":        "--allow-other",
		"securevol-key-rotate.8":   "--new-key-file",
		"securevol-volume-ls.8":    "--json",
		"securevol-completion.8":   "completion",
		"securevol-key-generate.8": "FILE",
	} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		if !strings.Contains(string(b), ".TH \"SECUREVOL\" \"8\"") || !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q:\n%s", page, want, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "securevol-man.8")); err == nil {
		t.Error("the hidden man command got a page")
	}
	if stdout, _, _ := runCLI(t, "--help"); strings.Contains(stdout, "man ") {
		t.Errorf("--help lists the hidden man command:\n%s", stdout)
	}
}
