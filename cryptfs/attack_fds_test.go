package cryptfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
)

// openFds counts this process's open descriptors (the mount runs in it).
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// plantNestedCopies turns the backing directory of a/x into a chain of
// depth directories a/x/x/x/…: each level gets a's IV, so the one valid
// name x decrypts at every level. Whoever can write the folder needs no
// key for this.
func (m *testMount) plantNestedCopies(depth int) {
	m.t.Helper()
	a := filepath.Join(m.backing, m.backingNameFor(m.backing, "a"))
	x := m.backingNameFor(a, "x")
	iv, err := os.ReadFile(filepath.Join(a, crypto.DirIVName))
	if err != nil {
		m.t.Fatal(err)
	}
	fd, err := unix.Open(a, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	for i := 0; i < depth; i++ {
		if err := unix.Mkdirat(fd, x, 0o755); err != nil && err != unix.EEXIST {
			m.t.Fatal(err)
		}
		next, err := unix.Openat(fd, x, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			m.t.Fatal(err)
		}
		fd = next
		unix.Unlinkat(fd, crypto.DirIVName, 0)
		ivfd, err := unix.Openat(fd, crypto.DirIVName, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o444)
		if err != nil {
			m.t.Fatal(err)
		}
		unix.Write(ivfd, iv)
		unix.Close(ivfd)
	}
	unix.Close(fd)
}

// walkDown opens a/x/x/… through the mount one component at a time and
// returns how deep it got.
func walkDown(t *testing.T, mnt string, depth int) int {
	t.Helper()
	fd, err := unix.Open(filepath.Join(mnt, "a"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for ; i < depth; i++ {
		next, err := unix.Openat(fd, "x", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Logf("walk stopped at depth %d: %v", i, err)
			break
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
	return i
}

// A planted tree of directories (here nested copies of one directory, made
// without the key) must not make the daemon hold one descriptor per
// directory: the descriptors of one daemon are shared by every volume it
// serves, so a walk of a large tree in one volume (a find, a backup, du)
// would otherwise exhaust them (EMFILE) for all volumes.
func TestAttackDeepTreeFds(t *testing.T) {
	const depth = 5000
	m := newTestMount(t)
	if err := os.MkdirAll(m.path("a", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	m.plantNestedCopies(depth)
	m.mount()
	before := openFds(t)
	if got := walkDown(t, m.dir, depth); got != depth {
		t.Fatalf("walked %d levels, want %d", got, depth)
	}
	held := openFds(t) - before
	t.Logf("descriptors held after walking %d directories: %d", depth, held)
	if held > 1024+16 {
		t.Errorf("the mount holds %d descriptors after a walk of %d directories; want at most about 1024", held, depth)
	}
}

// The same walk under a descriptor limit leaves another volume of the same
// daemon unable to open a few files at once.
func TestAttackDeepTreeFdsOtherVolume(t *testing.T) {
	const depth = 3000
	m, other := newTestMount(t), newTestMount(t)
	if err := os.MkdirAll(m.path("a", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	m.plantNestedCopies(depth)
	m.mount()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(openFds(t) + 2000)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	// Walk, then write to the other volume, from another process as
	// containers do: its descriptors do not count against the daemon's.
	script := "cd " + m.path("a") + " && while cd x 2>/dev/null; do :; done; cd " + other.dir +
		" && exec 3>f3 4>f4 5>f5 6>f6 7>f7 8>f8 9>f9"
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Errorf("after a walk of a planted tree in one volume, another volume cannot hold 7 files open: %v: %s", err, out)
	}
}
