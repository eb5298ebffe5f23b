package cryptfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// POSIX behaviour compared with ext4: the same sequence of system calls
// runs in an ext4 file system and through a securevol mount, each call's
// result is written down, and the two transcripts must be equal.

// transcript records what a sequence of system calls did. Calls name
// their paths relative to root, an open directory, so a path may be as
// long as PATH_MAX allows for one call, whatever the mount's own path.
type transcript struct {
	t       *testing.T
	dir     string // the work directory
	root    int    // open on dir
	lines   []string
	remount func() // drops every cache of the file system (nil: none to drop)
}

// rec writes down one call: its name, its errno ("ok" for none) and what
// it returned, if anything.
func (r *transcript) rec(op string, err error, result ...any) {
	line := op + ": " + errnoText(err)
	if len(result) > 0 {
		line += " " + strings.TrimSpace(fmt.Sprintln(result...))
	}
	r.lines = append(r.lines, line)
}

func errnoText(err error) string {
	var e syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &e):
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// reopen makes the file system forget what it cached (for the FUSE mount:
// unmount and mount again), so what follows reads what was stored.
func (r *transcript) reopen() {
	r.t.Helper()
	if r.remount == nil {
		return
	}
	unix.Close(r.root)
	r.remount()
	r.open()
}

func (r *transcript) open() {
	r.t.Helper()
	fd, err := unix.Open(r.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	r.root = fd
}

// runTranscript runs seq in a fresh directory dir.
func runTranscript(t *testing.T, dir string, remount func(), seq func(r *transcript)) []string {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &transcript{t: t, dir: dir, remount: remount}
	r.open()
	defer func() { unix.Close(r.root) }()
	seq(r)
	return r.lines
}

// compareWithExt4 runs seq on ext4 and through securevol and fails the
// test where the transcripts differ.
func compareWithExt4(t *testing.T, seq func(r *transcript)) {
	t.Helper()
	want := runTranscript(t, filepath.Join(newExt4(t), "work"), nil, seq)
	m := newTestMount(t)
	got := runTranscript(t, m.path("work"), m.remount, seq)
	for i := range max(len(want), len(got)) {
		w, g := line(want, i), line(got, i)
		if w != g {
			t.Errorf("call %d differs from ext4:\n  ext4:      %s\n  securevol: %s\nwhole transcripts:\n  ext4:\n    %s\n  securevol:\n    %s",
				i+1, w, g, strings.Join(want, "\n    "), strings.Join(got, "\n    "))
			return
		}
	}
	t.Logf("%d calls, same results as ext4", len(want))
}

func line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(none)"
}

// readNames lists an open directory, without . and .., sorted.
func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			slices.Sort(names)
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
