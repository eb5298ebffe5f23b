package cryptfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/attacktest"

	"github.com/securevol/securevol/crypto"
)

// specialNode is a kind of non-regular file an attacker plants in the
// backing folder where securevol expects a regular file.
type specialNode struct {
	name string
	mode uint32
	// dev is the device number, and check (if set) reports what an open of
	// the device changed; both from the test's setup.
	dev    func(t *testing.T) (dev uint64, check func() string)
	isFIFO bool // may be opened (O_NONBLOCK, to learn its type) but must never block
}

var specialNodes = []specialNode{
	{name: "fifo", mode: unix.S_IFIFO, isFIFO: true},
	{name: "socket", mode: unix.S_IFSOCK},
	// /dev/null's numbers: an open "succeeds" and swallows every write.
	{name: "chr-null", mode: unix.S_IFCHR, dev: func(*testing.T) (uint64, func() string) { return unix.Mkdev(1, 3), nil }},
	// A loop device over a scratch file: a write through it would show.
	{name: "blk-loop", mode: unix.S_IFBLK, dev: scratchLoop},
}

// nodeAttack is one operation run through the mount after a special node
// was planted at one place of the backing folder.
type nodeAttack struct {
	place string // what the node replaces
	// offline: planted while unmounted (the next mount sees the node);
	// else planted under a mount whose kernel cached the entry as a file.
	offline bool
	op      string
	// mustFail: the operation has to fail (it can only succeed by using
	// the planted node).
	mustFail bool
	run      func(m *testMount) error
}

var nodeAttacks = []nodeAttack{
	// A regular file, cached by the kernel as such.
	{place: "file", op: "read", mustFail: true, run: func(m *testMount) error { _, err := os.ReadFile(m.path("f")); return err }},
	{place: "file", op: "write", mustFail: true, run: func(m *testMount) error { return writeFileVia(m.path("f"), []byte("into the device")) }},
	{place: "file", op: "stat", run: func(m *testMount) error { return statForced(m.path("f")) }},
	// A regular file, seen afresh: the node shows as what it is; opening
	// it is the kernel's business (a FIFO, or refused on a nodev mount).
	{place: "file", offline: true, op: "open-nonblock", run: func(m *testMount) error {
		fd, err := unix.Open(m.path("f"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Read(fd, make([]byte, 16))
			unix.Close(fd)
		}
		return err
	}},
	{place: "file", offline: true, op: "stat", run: func(m *testMount) error { return statForced(m.path("f")) }},
	{place: "file", offline: true, op: "list", run: func(m *testMount) error { _, err := os.ReadDir(m.dir); return err }},
	// The IV of directory sd, which holds a file: no name in sd can be
	// decrypted or encrypted without it.
	{place: "diriv", offline: true, op: "list", mustFail: true, run: func(m *testMount) error { _, err := os.ReadDir(m.path("sd")); return err }},
	{place: "diriv", offline: true, op: "stat", mustFail: true, run: func(m *testMount) error { return statForced(m.path("sd/x")) }},
	{place: "diriv", offline: true, op: "read", mustFail: true, run: func(m *testMount) error { _, err := os.ReadFile(m.path("sd/x")); return err }},
	// The sidecar of a long name in directory ld, read when listing.
	{place: "sidecar", offline: true, op: "list", run: func(m *testMount) error { _, err := os.ReadDir(m.path("ld")); return err }},
	{place: "sidecar", offline: true, op: "stat", run: func(m *testMount) error { return statForced(m.path("ld", longAttackName)) }},
	// The volume header, which the mount itself never needs.
	{place: "header", offline: true, op: "list", run: func(m *testMount) error { _, err := os.ReadDir(m.dir); return err }},
	{place: "header", offline: true, op: "stat", run: func(m *testMount) error { return statForced(m.path("f")) }},
}

var longAttackName = strings.Repeat("long name ", 20)

// TestAttackSpecialNodes plants a FIFO, a socket, a character device
// (/dev/null's numbers) and a block device (a loop device over a scratch
// file) in place of a file, a directory IV, a long-name sidecar and the
// header. Every operation through the mount must return within 5 s (a
// FIFO must never block a request), a device node must never be opened
// (opening a device can act on the host), and operations that could only
// succeed through the node must fail.
//
// Each case gets its own mount, since a request that fails on a node of
// the wrong type can make the kernel refuse every later one. All cases
// start their operation before any is waited for, so operations that hang
// wait out their deadlines together.
func TestAttackSpecialNodes(t *testing.T) {
	type started struct {
		name  string
		check func(t *testing.T)
	}
	var all []started
	for _, k := range specialNodes {
		var dev uint64
		var devCheck func() string
		if k.dev != nil {
			dev, devCheck = k.dev(t)
		}
		for _, a := range nodeAttacks {
			when := "mounted"
			if a.offline {
				when = "offline"
			}
			all = append(all, started{k.name + "/" + a.place + "/" + when + "/" + a.op, startNodeAttack(t, k, dev, devCheck, a)})
		}
	}
	for _, s := range all {
		t.Run(s.name, s.check)
	}
}

// startNodeAttack mounts a volume, plants the node and starts the
// operation; the returned check waits for it and judges the outcome.
func startNodeAttack(t *testing.T, k specialNode, dev uint64, devCheck func() string, a nodeAttack) func(t *testing.T) {
	m := newTestMount(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(m.path("f"), pattern(3, 5000), 0o644))
	must(os.Mkdir(m.path("sd"), 0o755))
	must(os.WriteFile(m.path("sd/x"), []byte("in sd"), 0o644))
	must(os.Mkdir(m.path("ld"), 0o755))
	must(os.WriteFile(m.path("ld", longAttackName), []byte("long"), 0o644))
	for _, p := range []string{"f", "sd", "sd/x", "ld", filepath.Join("ld", longAttackName)} {
		_, err := os.Lstat(m.path(p))
		must(err)
	}
	at := m.nodePlace(a.place)
	plant := func() {
		must(os.Remove(at))
		must(unix.Mknod(at, k.mode|0o644, int(dev)))
	}
	if a.offline {
		m.offline(plant)
	} else {
		plant()
	}
	w := attacktest.WatchName(t, filepath.Dir(at), filepath.Base(at))
	op := attacktest.Start(func() error { return a.run(m) })
	if k.isFIFO {
		// A request hung on the FIFO ends once someone opens its other end.
		t.Cleanup(func() { attacktest.UnblockUntil([]*attacktest.Op{op}, at) })
	}

	return func(t *testing.T) {
		err := op.Wait()
		t.Logf("%s with a %s as %s: %v", a.op, k.name, a.place, err)
		switch {
		case err == attacktest.ErrHung:
			t.Errorf("%s hung on the %s planted as %s", a.op, k.name, a.place)
		case err == nil && a.mustFail:
			t.Errorf("%s succeeded: it can only have used the %s planted as %s", a.op, k.name, a.place)
		}
		if ev := w.Uses(); len(ev) > 0 && !k.isFIFO {
			t.Errorf("the %s planted as %s was used:\n  %s", k.name, a.place, strings.Join(ev, "\n  "))
		}
		if devCheck != nil {
			if changed := devCheck(); changed != "" {
				t.Errorf("the device behind the planted %s was written: %s", k.name, changed)
			}
		}
	}
}

// nodePlace is the backing path a special node replaces.
func (m *testMount) nodePlace(place string) string {
	m.t.Helper()
	switch place {
	case "file":
		return m.backingOf("f")
	case "diriv":
		return filepath.Join(m.backingOf("sd"), crypto.DirIVName)
	case "sidecar":
		// The only sidecar in ld's backing directory.
		sidecars, _ := filepath.Glob(filepath.Join(m.backingOf("ld"), crypto.LongNamePrefix+"*"+crypto.LongNameSuffix))
		if len(sidecars) != 1 {
			m.t.Fatalf("long-name sidecars in ld: %v", sidecars)
		}
		return sidecars[0]
	case "header":
		p := filepath.Join(m.backing, crypto.HeaderName)
		if _, err := os.Lstat(p); err != nil {
			m.t.Fatal(err)
		}
		return p
	}
	m.t.Fatalf("unknown place %q", place)
	return ""
}
