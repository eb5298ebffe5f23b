// Package testenv decides whether tests that need real parts (a FUSE device,
// root, a Docker engine) can run. Outside CI a missing part skips the test;
// with CI=true it fails it, because CI installs and starts all of them.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under .ci/run.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t, or fails it under CI, because what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but %s: CI must provide it", what)
	}
	t.Skipf("skipping: %s", what)
}

// RequireFUSE makes sure FUSE mounts can be made: root, /dev/fuse and
// fusermount3 (go-fuse falls back to it when mount(2) is refused).
func RequireFUSE(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("skipping FUSE test in -short mode")
	}
	if os.Geteuid() != 0 {
		Missing(t, "FUSE tests need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Missing(t, "no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		Missing(t, "no fusermount3 (Debian package fuse3)")
	}
}

// RequireDocker makes sure a Docker engine answers.
func RequireDocker(t testing.TB) {
	t.Helper()
	RequireFUSE(t)
	if _, err := exec.LookPath("docker"); err != nil {
		Missing(t, "no docker client")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		Missing(t, "no Docker engine answers: "+string(out))
	}
}
