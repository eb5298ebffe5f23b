package main

import (
	"strings"
	"testing"
)

// Every shell's completion script comes out, naming the commands.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		stdout, stderr, code := runCLI(t, "completion", shell)
		if code != 0 || stderr != "" || len(stdout) < 1000 || !strings.Contains(stdout, "securevol") {
			t.Errorf("completion %s: exit %d %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
	// The completion itself answers from the command definitions.
	stdout, _, _ := runCLI(t, "__complete", "key", "")
	if !strings.Contains(stdout, "generate") || !strings.Contains(stdout, "rotate") {
		t.Errorf("completing 'securevol key ': %q", stdout)
	}
	stdout, _, _ = runCLI(t, "__complete", "mount", "--max")
	if !strings.Contains(stdout, "--max-write") {
		t.Errorf("completing 'securevol mount --max': %q", stdout)
	}
}
