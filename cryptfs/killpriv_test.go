package cryptfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/securevol/securevol/internal/testenv"
)

// TestSetIDCleared: the kernel leaves clearing set-ID bits to us
// (FUSE_HANDLE_KILLPRIV_V2), so a write, truncate or O_TRUNC open by an
// unprivileged owner must clear them as on ext4: set-user-ID always,
// set-group-ID only with group execute; root (CAP_FSETID) keeps them. The
// mode is checked both as the kernel shows it and after a remount.
func TestSetIDCleared(t *testing.T) {
	testenv.RequireFUSE(t) // and root, to act as another user
	tests := []struct {
		name   string
		mode   uint32 // set with chmod(2) before
		script string // run in the mount as user 4321, or root
		root   bool
		want   uint32
	}{
		{"write clears suid", 0o4755, "echo x >> f", false, 0o755},
		{"write clears sgid with group exec", 0o2755, "echo x >> f", false, 0o755},
		{"write keeps sgid without group exec", 0o2644, "echo x >> f", false, 0o2644},
		{"write clears both", 0o6775, "echo x >> f", false, 0o775},
		{"truncate clears suid", 0o4755, "truncate -s 1 f", false, 0o755},
		{"O_TRUNC open clears suid", 0o4755, "echo x > f", false, 0o755},
		{"root's write keeps suid", 0o4755, "echo x >> f", true, 0o4755},
		{"plain mode untouched", 0o755, "echo x >> f", false, 0o755},
	}
	m := newTestMountOpts(t, Options{AllowOther: true})
	for p := m.dir; p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755) // let the test user reach the mountpoint
	}
	os.Chmod(m.dir, 0o777)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := m.path("f")
			os.Remove(f)
			if err := os.WriteFile(f, []byte("hello\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(f, 4321, 4321); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(f, tt.mode); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sh", "-c", tt.script)
			cmd.Dir = m.dir
			if !tt.root {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4321}}
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", tt.script, err, out)
			}
			if got := modeOf(t, f); got != tt.want {
				t.Errorf("through the mount: mode %#o, want %#o", got, tt.want)
			}
			m.remount()
			if got := modeOf(t, f); got != tt.want {
				t.Errorf("after a remount: mode %#o, want %#o", got, tt.want)
			}
		})
	}
}

// TestNoCapabilityQueryPerWrite: with FUSE_HANDLE_KILLPRIV_V2 the kernel
// stops asking for security.capability before each write.
func TestNoCapabilityQueryPerWrite(t *testing.T) {
	c := &counter{}
	m := newTestMountOpts(t, Options{Observer: c})
	f, err := os.Create(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := c.ops[OpGetXAttr].Load()
	for i := 0; i < 50; i++ {
		if _, err := f.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.ops[OpWrite].Load(); n < 50 {
		t.Fatalf("%d WRITE requests for 50 writes: the test does not measure what it means to", n)
	}
	// The first write may still ask: the kernel marks the inode S_NOSEC
	// once it has seen it has nothing to drop. Without the capability
	// every write asks (50 here).
	if n := c.ops[OpGetXAttr].Load() - before; n > 1 {
		t.Errorf("%d GETXATTR requests during 50 writes, want at most 1", n)
	}
}

// modeOf returns the permission and set-ID bits of p as stat(2) gives them.
func modeOf(t *testing.T, p string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mode & 0o7777
}
