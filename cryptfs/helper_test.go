package cryptfs

import (
	"github.com/securevol/securevol/internal/testenv"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// testMount is an encrypted directory mounted for one test.
type testMount struct {
	t       testing.TB
	backing string // the ciphertext folder
	dir     string // the mountpoint: plaintext
	keys    *crypto.VolumeKeys
	logs    *logtest.Hook
	srv     *fuse.Server
	opts    Options
}

// newTestMount initialises a backing folder under a fresh random master
// key and mounts it; it is unmounted when the test ends.
func newTestMount(t testing.TB) *testMount {
	t.Helper()
	return newTestMountOpts(t, Options{})
}

// newTestMountOpts is newTestMount with mount options (Log is set here).
func newTestMountOpts(t testing.TB, opts Options) *testMount {
	t.Helper()
	return newTestMountAt(t, t.TempDir(), opts)
}

// newTestMountIn keeps the backing folder in dir (a small file system, say).
func newTestMountIn(t testing.TB, dir string) *testMount {
	t.Helper()
	return newTestMountAt(t, dir, Options{})
}

func newTestMountAt(t testing.TB, backingParent string, opts Options) *testMount {
	t.Helper()
	testenv.RequireFUSE(t)
	mk, err := crypto.RandomMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &testMount{t: t, backing: filepath.Join(backingParent, "backing"), dir: filepath.Join(t.TempDir(), "mnt"), opts: opts}
	for _, d := range []string{m.backing, m.dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := backing.WithRoot(m.backing, func(root *backing.Dir) (err error) {
		_, m.keys, err = backing.InitVolume(root, crypto.StaticKey{Key: mk}, "", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	m.mount()
	t.Cleanup(m.unmount)
	return m
}

func (m *testMount) mount() {
	m.t.Helper()
	logger, hook := logtest.NewNullLogger()
	m.logs = hook
	opts := m.opts
	opts.Log = logrus.NewEntry(logger)
	opts.FsName = "securevol-test"
	srv, err := Mount(m.backing, m.dir, m.keys, opts)
	if err != nil {
		testenv.Missing(m.t, fmt.Sprintf("FUSE mount failed: %v", err))
	}
	m.srv = srv
}

func (m *testMount) unmount() {
	if m.srv == nil {
		return
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = m.srv.Unmount(); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // a file still being closed
	}
	if err != nil {
		m.t.Errorf("unmount %s: %v", m.dir, err)
		// Detach it anyway so the next tests and TempDir's cleanup work.
		unix.Unmount(m.dir, unix.MNT_DETACH)
	}
	m.srv = nil
}

// remount drops every kernel cache of the plaintext (pages, attributes,
// names) and the mount's own caches, so the next access reads the backing
// folder afresh.
func (m *testMount) remount() {
	m.t.Helper()
	m.unmount()
	m.mount()
}

func (m *testMount) path(elem ...string) string {
	return filepath.Join(append([]string{m.dir}, elem...)...)
}

// backingFiles lists every regular file below the backing folder that is
// not bookkeeping, by relative path.
func (m *testMount) backingFiles() []string {
	m.t.Helper()
	var out []string
	err := filepath.Walk(m.backing, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && !crypto.IsInternalName(fi.Name()) {
			rel, _ := filepath.Rel(m.backing, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return out
}

// loggedContaining returns the log entries whose message contains s.
func (m *testMount) loggedContaining(s string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range m.logs.AllEntries() {
		if strings.Contains(e.Message, s) {
			out = append(out, e)
		}
	}
	return out
}

func isErrno(err error, want error) bool { return errors.Is(err, want) }
