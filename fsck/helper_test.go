package fsck

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// checkDeadline is how long a check of a small tree may take: far more
// than it needs, far less than a test timeout, so a check blocked in a
// FIFO's open fails here instead of hanging the run.
const checkDeadline = 5 * time.Second

// checkWithin runs Check with a deadline. If it runs out, each FIFO in
// fifos is opened for writing, which wakes a reader blocked in its open,
// and the test fails.
func checkWithin(t *testing.T, keys *crypto.VolumeKeys, root string, fifos ...string) (Report, []Problem) {
	t.Helper()
	type result struct {
		rep Report
		ps  []Problem
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.rep, r.err = Check(root, keys, func(p Problem) { r.ps = append(r.ps, p) })
		done <- r
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.rep, r.ps
	case <-time.After(checkDeadline):
		for _, f := range fifos {
			if fd, err := unix.Open(f, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		}
		t.Fatalf("fsck still running after %v: it opened a FIFO", checkDeadline)
		return Report{}, nil
	}
}

// wantProblem fails unless some problem mentions every string in want.
func wantProblem(t *testing.T, ps []Problem, want ...string) {
	t.Helper()
	for _, p := range ps {
		s := p.String()
		all := true
		for _, w := range want {
			all = all && strings.Contains(s, w)
		}
		if all {
			return
		}
	}
	t.Fatalf("no problem mentions %q; got %v", want, ps)
}

// opens records, with inotify, the names opened in one directory (the
// directory itself shows as "."). O_PATH descriptors and stats are not
// opens; reading a FIFO, a device or a file is.
type opens struct{ fd int }

func watchOpens(t *testing.T, dir string) *opens {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
		t.Fatal(err)
	}
	return &opens{fd}
}

func (o *opens) names(t *testing.T) []string {
	t.Helper()
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(o.fd, buf)
		if err == unix.EAGAIN {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
			name := string(bytes.TrimRight(b[unix.SizeofInotifyEvent:unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			if name == "" {
				name = "."
			}
			out = append(out, name)
			b = b[unix.SizeofInotifyEvent+int(ev.Len):]
		}
	}
}

// outsideDir is a folder outside the backing folder that planted symlinks
// point into. Everything in it is a FIFO without a writer, so a checker
// that followed a link there and opened anything would block.
type outsideDir struct {
	dir, fifo string
	fifos     []string
	opens     *opens
}

func newOutside(t *testing.T) *outsideDir {
	t.Helper()
	o := &outsideDir{dir: t.TempDir()}
	o.fifo = filepath.Join(o.dir, "fifo")
	for _, name := range []string{"fifo", crypto.DirIVName, crypto.HeaderName} {
		p := filepath.Join(o.dir, name)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		o.fifos = append(o.fifos, p)
	}
	o.opens = watchOpens(t, o.dir)
	return o
}

// untouched fails if anything in the outside folder, or the folder itself,
// was opened.
func (o *outsideDir) untouched(t *testing.T) {
	t.Helper()
	if got := o.opens.names(t); len(got) > 0 {
		t.Fatalf("fsck opened %v outside the backing folder", got)
	}
}

// addLongName adds an empty file whose encoded name is too long to store
// to l.dir: a hashed backing name and its sidecar. It returns the sidecar.
func addLongName(t *testing.T, l layout) string {
	t.Helper()
	iv, err := readDirIV(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := l.keys.EncryptName(strings.Repeat("long name ", 20), iv)
	if err != nil {
		t.Fatal(err)
	}
	name, long := crypto.BackingName(enc)
	if !long {
		t.Fatalf("%d-byte encoded name is not long", len(enc))
	}
	sidecar := filepath.Join(l.dir, crypto.LongNameSidecar(name))
	if err := os.WriteFile(sidecar, []byte(enc), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return sidecar
}

// addLongTarget adds a symlink to l.root whose target (PATH_MAX-1 bytes)
// is sealed into a file of the root. It returns that file.
func addLongTarget(t *testing.T, l layout) string {
	t.Helper()
	iv, err := readDirIV(l.root)
	if err != nil {
		t.Fatal(err)
	}
	stored, blob, err := l.keys.SealSymlink(strings.Repeat("t/", crypto.MaxSymlinkLen/2) + "t")
	if err != nil {
		t.Fatal(err)
	}
	if blob == nil {
		t.Fatal("a PATH_MAX-1 target was stored inline")
	}
	file := filepath.Join(l.root, stored)
	if err := os.WriteFile(file, blob, 0o400); err != nil {
		t.Fatal(err)
	}
	enc, err := l.keys.EncryptName("long link", iv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(stored, filepath.Join(l.root, enc)); err != nil {
		t.Fatal(err)
	}
	return file
}

// replace removes the entry at p (a directory with its contents) and runs plant to put something else in
// its place.
func replace(t *testing.T, p string, plant func(p string) error) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := plant(p); err != nil {
		t.Fatal(err)
	}
}

// requireRoot is for device nodes, which only root can make.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "making device nodes needs root")
	}
}
