package backing

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// noProcEnv tells a re-executed test binary that it runs in a mount
// namespace of its own, where it may hide /proc.
const noProcEnv = "SECUREVOL_TEST_NO_PROC"

// TestWithoutProc: every open of an existing file goes through
// /proc/self/fd. Where /proc is not mounted (a bare container, a sandbox)
// that open must fail as an I/O error, never as "no such file": the
// daemon takes a missing header for a folder it may delete (a create cut
// short), and a missing header for one it need not shred.
func TestWithoutProc(t *testing.T) {
	if os.Getenv(noProcEnv) == "1" {
		checkWithoutProc(t)
		return
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "hiding /proc needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWithoutProc$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), noProcEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("without /proc: %v\n%s", err, out)
	}
}

func checkWithoutProc(t *testing.T) {
	root, path := openTestRoot(t)
	k, _ := crypto.RandomMasterKey()
	_, _, err := InitVolume(root, crypto.StaticKey{Key: k}, "", nil)
	mustOK(t, err)
	mustOK(t, unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
	mustOK(t, unix.Mount("none", "/proc", "tmpfs", 0, ""))

	_, err = ReadHeader(root)
	if errors.Is(err, ErrNoHeader) || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EIO) {
		t.Errorf("ReadHeader without /proc: %v; want an I/O error, not a missing header", err)
	}
	if _, err := ReadDirIV(root); errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EIO) {
		t.Errorf("ReadDirIV without /proc: %v; want an I/O error, not a missing IV", err)
	}
	if err := DestroyKey(root); err == nil {
		t.Error("DestroyKey without /proc reported success without zeroing the header")
	}
	if _, err := os.Stat(filepath.Join(path, crypto.HeaderName)); err != nil {
		t.Errorf("header: %v", err)
	}
}
