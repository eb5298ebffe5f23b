package cryptfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/attacktest"
)

// symlinkAttack is one operation that takes a path, run through the mount
// after a symlink to a tree outside the backing folder was planted in the
// backing path it maps to.
type symlinkAttack struct {
	op string
	// target is the plaintext entry whose backing entry becomes the
	// symlink in the last-component case. In the intermediate case the
	// backing directory of "d", above every target, becomes the symlink.
	target string
	// isNew: target does not exist yet; the symlink is planted under its
	// future backing name and points to the outside victim file, or with
	// newDir to the victim directory.
	isNew, newDir bool
	// run is the operation; it returns what it read, if anything.
	run func(m *testMount) (string, error)
}

// outsideMark is in every value of the copies planted outside the backing
// folder (file content, xattr value, symlink target, a directory entry, and
// the mode outsideMode), and in none of the entries left in the folder: an
// operation that shows it read outside the folder.
const (
	outsideMark = "OUTSIDE-MARK"
	outsideMode = 0o604
)

// op wraps an operation that shows nothing.
func op(fn func(m *testMount) error) func(m *testMount) (string, error) {
	return func(m *testMount) (string, error) { return "", fn(m) }
}

var symlinkAttacks = []symlinkAttack{
	{op: "chmod", target: "d/f", run: op(func(m *testMount) error { return os.Chmod(m.path("d/f"), 0o666) })},
	{op: "chown", target: "d/f", run: op(func(m *testMount) error { return os.Lchown(m.path("d/f"), 4242, 4242) })},
	{op: "utimes", target: "d/f", run: op(func(m *testMount) error {
		return unix.UtimesNano(m.path("d/f"), []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}})
	})},
	{op: "truncate", target: "d/f", run: op(func(m *testMount) error { return os.Truncate(m.path("d/f"), 1) })},
	{op: "open-read", target: "d/f", run: func(m *testMount) (string, error) {
		b, err := os.ReadFile(m.path("d/f"))
		return string(b), err
	}},
	{op: "open-write", target: "d/f", run: op(func(m *testMount) error { return writeFileVia(m.path("d/f"), []byte("attack")) })},
	{op: "create", target: "d/newfile", isNew: true, run: op(func(m *testMount) error {
		return os.WriteFile(m.path("d/newfile"), []byte("attack"), 0o644)
	})},
	{op: "unlink", target: "d/f", run: op(func(m *testMount) error { return unix.Unlink(m.path("d/f")) })},
	{op: "rmdir", target: "d/sub", run: op(func(m *testMount) error { return unix.Rmdir(m.path("d/sub")) })},
	{op: "rename-source", target: "d/f", run: op(func(m *testMount) error { return os.Rename(m.path("d/f"), m.path("d/g")) })},
	{op: "rename-target", target: "d/f", run: op(func(m *testMount) error { return os.Rename(m.path("r"), m.path("d/f")) })},
	{op: "mkdir", target: "d/newdir", isNew: true, newDir: true, run: op(func(m *testMount) error {
		return unix.Mkdir(m.path("d/newdir"), 0o755)
	})},
	{op: "mknod-fifo", target: "d/newfifo", isNew: true, run: op(func(m *testMount) error {
		return unix.Mkfifo(m.path("d/newfifo"), 0o644)
	})},
	{op: "symlink", target: "d/newlink", isNew: true, run: op(func(m *testMount) error {
		return os.Symlink("somewhere", m.path("d/newlink"))
	})},
	{op: "link-source", target: "d/f", run: op(func(m *testMount) error { return os.Link(m.path("d/f"), m.path("hard")) })},
	{op: "link-target", target: "d/newhard", isNew: true, run: op(func(m *testMount) error {
		return os.Link(m.path("r"), m.path("d/newhard"))
	})},
	{op: "readlink", target: "d/ln", run: func(m *testMount) (string, error) { return os.Readlink(m.path("d/ln")) }},
	{op: "getxattr", target: "d/f", run: func(m *testMount) (string, error) {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(m.path("d/f"), "user.k", buf)
		return string(buf[:max(n, 0)]), err
	}},
	{op: "setxattr", target: "d/f", run: op(func(m *testMount) error {
		return unix.Setxattr(m.path("d/f"), "user.k", []byte("attack"), 0)
	})},
	{op: "listxattr", target: "d/f", run: func(m *testMount) (string, error) {
		buf := make([]byte, 1024)
		n, err := unix.Listxattr(m.path("d/f"), buf)
		return string(buf[:max(n, 0)]), err
	}},
	{op: "removexattr", target: "d/f", run: op(func(m *testMount) error { return unix.Removexattr(m.path("d/f"), "user.k") })},
	{op: "readdir", target: "d/list", run: func(m *testMount) (string, error) {
		ents, err := os.ReadDir(m.path("d/list"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), err
	}},
	{op: "stat", target: "d/f", run: func(m *testMount) (string, error) {
		var st unix.Statx_t
		err := unix.Statx(unix.AT_FDCWD, m.path("d/f"), unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &st)
		if err == nil && st.Mode&0o7777 == outsideMode {
			return "mode of the " + outsideMark + " copy", nil
		}
		return "", err
	}},
}

// TestAttackSymlink: for every operation that takes a path, a symlink to
// a scratch tree outside the backing folder is planted in the last and in
// an intermediate component of the backing path, either while mounted
// (the kernel keeps using the names and attributes it cached, so the
// daemon computes the planted path without any race) or offline before a
// fresh mount. The operation may fail; nothing outside the backing folder
// may change, be created, removed or even opened.
func TestAttackSymlink(t *testing.T) {
	for _, a := range symlinkAttacks {
		for _, where := range []string{"last", "intermediate"} {
			for _, when := range []string{"mounted", "offline"} {
				t.Run(a.op+"/"+where+"/"+when, func(t *testing.T) {
					runSymlinkAttack(t, a, where == "intermediate", when == "offline")
				})
			}
		}
	}
}

func runSymlinkAttack(t *testing.T, a symlinkAttack, intermediate, offline bool) {
	t.Parallel()
	m := newTestMount(t)
	outside := newOutsideTree(t)
	staged := buildAttackTree(t, m)
	// What the kernel caches now it keeps using after the plant.
	for _, p := range []string{"d", "d/f", "d/sub", "d/list", "d/ln", "r"} {
		if _, err := os.Lstat(m.path(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(m.path(a.target)); a.isNew && !os.IsNotExist(err) {
		t.Fatalf("%s should not exist yet: %v", a.target, err)
	}

	at, copied, to := symlinkPlant(m, a, staged, outside, intermediate)
	attic := filepath.Join(t.TempDir(), "attic")
	plant := func() {
		if copied != "" {
			if err := os.Rename(copied, to); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(at, attic); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(to, at); err != nil {
			t.Fatal(err)
		}
	}
	if offline {
		m.offline(plant)
	} else {
		plant()
	}

	before := attacktest.Snapshot(t, outside)
	w := attacktest.WatchTree(t, outside)
	var seen string
	err := attacktest.Within(func() (err error) { seen, err = a.run(m); return err })
	events := w.Uses()
	changed := before.Diff(attacktest.Snapshot(t, outside))
	t.Logf("%s through the mount: %v", a.op, err)
	if err == attacktest.ErrHung {
		t.Errorf("%s hung", a.op)
	}
	if len(changed) > 0 {
		t.Errorf("%s changed files outside the backing folder (under %s):\n  %s", a.op, outside, strings.Join(changed, "\n  "))
	}
	if len(events) > 0 {
		t.Errorf("%s touched files outside the backing folder:\n  %s", a.op, strings.Join(events, "\n  "))
	}
	if strings.Contains(seen, outsideMark) {
		t.Errorf("%s read from outside the backing folder: got %q", a.op, seen)
	}
}

// buildAttackTree makes, through the mount, d/f (data and an xattr), d/sub
// (empty), d/list (empty), d/ln (a symlink) and r (a file at the root). It
// first gives d's entries values marked outsideMark and copies d's backing
// directory as they are, which it returns: the copies to plant outside.
func buildAttackTree(t *testing.T, m *testMount) (staged string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(m.path("d"), 0o755))
	must(os.Mkdir(m.path("d/sub"), 0o755))
	must(os.Mkdir(m.path("d/list"), 0o755))
	must(os.WriteFile(m.path("d/list/"+outsideMark), nil, 0o644))
	must(os.WriteFile(m.path("d/f"), []byte("content of the "+outsideMark+" copy"), outsideMode))
	must(os.Chmod(m.path("d/f"), outsideMode))
	must(unix.Setxattr(m.path("d/f"), "user.k", []byte(outsideMark), 0))
	must(os.Symlink(outsideMark, m.path("d/ln")))
	must(os.WriteFile(m.path("r"), []byte("root file"), 0o644))

	staged = filepath.Join(t.TempDir(), "staged")
	copyTree(t, m.backingOf("d"), staged)

	must(os.Remove(m.path("d/list/" + outsideMark)))
	must(os.WriteFile(m.path("d/f"), pattern(7, 5000), 0o644))
	must(os.Chmod(m.path("d/f"), 0o644))
	must(unix.Setxattr(m.path("d/f"), "user.k", []byte("value of k"), 0))
	must(os.Remove(m.path("d/ln")))
	must(os.Symlink("f", m.path("d/ln")))
	return staged
}

// newOutsideTree makes the scratch tree a symlink may point to: a file and
// a directory with content, a distinctive mode, an owner and an xattr.
func newOutsideTree(t *testing.T) string {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.MkdirAll(filepath.Join(outside, "victimdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"victim": "host file: must never change", "victimdir/inner": "inside a host dir"}
	for name, content := range files {
		p := filepath.Join(outside, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.host", []byte("host xattr"), 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 1001, 1001); err != nil {
			t.Fatal(err)
		}
	}
	return outside
}

// symlinkPlant says where the symlink goes (at) and what it points to
// (to). An existing entry (for intermediate, the backing directory of d) is
// replaced: its marked copy (copied, from the staged directory) moves to
// "to", so the outside tree holds genuine ciphertext, IVs and xattrs the
// daemon would accept; the original is moved aside but not into the
// outside tree (a daemon that still holds it open acts on the volume's own
// entry, wherever the attacker moved it). A name that does not exist yet
// gets a symlink to the outside victim (copied is empty).
func symlinkPlant(m *testMount, a symlinkAttack, staged, outside string, intermediate bool) (at, copied, to string) {
	m.t.Helper()
	bd := m.backingOf("d")
	switch {
	case intermediate:
		return bd, staged, filepath.Join(outside, "d-copy")
	case a.isNew && a.newDir:
		return filepath.Join(bd, m.backingNameFor(bd, filepath.Base(a.target))), "", filepath.Join(outside, "victimdir")
	case a.isNew:
		return filepath.Join(bd, m.backingNameFor(bd, filepath.Base(a.target))), "", filepath.Join(outside, "victim")
	}
	at = m.backingOf(a.target)
	return at, filepath.Join(staged, filepath.Base(at)), filepath.Join(outside, "copy")
}

// copyTree copies a file, symlink or directory tree with modes, owners,
// times and xattrs.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", "--preserve=all", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}
