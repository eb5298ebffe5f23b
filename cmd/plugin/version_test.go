package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// goFuseVersion is the go-fuse version go.mod requires.
func goFuseVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(goFuseModule) + `\s+(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod does not require go-fuse")
	}
	return string(m[1])
}

// --version and version print the same build facts: the Go and go-fuse
// versions at least.
func TestVersion(t *testing.T) {
	fuse := goFuseVersion(t)
	var outs []string
	for _, args := range [][]string{{"--version"}, {"version"}, {"-v"}} {
		stdout, stderr, code := runCLI(t, args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "securevol "+version+"\n") ||
			!strings.Contains(stdout, runtime.Version()) || !strings.Contains(stdout, "go-fuse:  "+fuse) {
			t.Errorf("securevol %v: exit %d %q\n%s", args, code, stderr, stdout)
		}
		outs = append(outs, stdout)
	}
	if outs[0] != outs[1] || outs[1] != outs[2] {
		t.Errorf("--version and version differ:\n%s\n%s", outs[0], outs[1])
	}
}

// The commit and the dirty flag come from what the toolchain recorded.
func TestVersionBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Path: "github.com/securevol/securevol", Version: "v1.2.3"},
		Deps:     []*debug.Module{{Path: goFuseModule, Version: "v2.0.0"}, {Path: "golang.org/x/sys", Version: "v0.1.0"}},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}}}
	got := formatVersion("1.2.3-4-gabc123-dirty", bi, true)
	for _, want := range []string{"securevol 1.2.3-4-gabc123-dirty\n", "module:   github.com/securevol/securevol v1.2.3", "commit:   abc123 (dirty)",
		"committed: 2026-01-02T03:04:05Z", "go:       go1.99", "go-fuse:  v2.0.0"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q missing from\n%s", want, got)
		}
	}
	bi.Settings[1].Value = "false"
	if got := formatVersion("x", bi, true); strings.Contains(got, "dirty") || strings.Contains(got, "x/sys") {
		t.Errorf("a clean tree, or another module, shows:\n%s", got)
	}
	if got := formatVersion("x", nil, false); !strings.Contains(got, "no build information") {
		t.Errorf("without build info: %q", got)
	}
}

// The Makefile's -X main.version reaches the binary's output.
func TestVersionStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "securevol")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "securevol v9.8.7-test\n") || !strings.Contains(string(out), goFuseVersion(t)) {
		t.Fatalf("stamped binary --version: %v\n%s", err, out)
	}
}
