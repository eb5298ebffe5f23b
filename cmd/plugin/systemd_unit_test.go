package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitPath is the legacy plugin's systemd unit.
const unitPath = "../../contrib/systemd/securevol.service"

// The unit waits for READY=1, hardens the service, and sets nothing that
// would put it in a mount namespace of its own (its FUSE mounts would then
// be invisible to dockerd and the containers). systemd-analyze, where
// installed, accepts it.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			set[k] = v
		}
	}
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "NoNewPrivileges": "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallArchitectures": "native",
		"LockPersonality": "yes", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
		"ExecStart": "/usr/local/bin/securevol serve",
	} {
		if set[k] != want {
			t.Errorf("%s=%q, want %q", k, set[k], want)
		}
	}
	for _, k := range []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
		"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname",
		"ProtectProc", "ProtectClock", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem",
		"BindPaths", "BindReadOnlyPaths", "MountFlags", "RootDirectory", "DynamicUser", "DeviceAllow", "RestrictSUIDSGID"} {
		if v, ok := set[k]; ok {
			t.Errorf("%s=%s would hide the FUSE mounts or refuse what they need", k, v)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze: the unit's syntax is not checked")
		return
	}
	// verify wants ExecStart's program to exist.
	dir := t.TempDir()
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/securevol", buildServeBinary(t))
	p := filepath.Join(dir, "securevol.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", p).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
