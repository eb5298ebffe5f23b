package cryptfs

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/securevol/securevol/crypto"
)

// counter is an Observer that counts what it hears.
type counter struct {
	read, written, auth, mounted, unmounted atomic.Int64
	ops                                     [NumOps]atomic.Int64
}

func (c *counter) Request(op Op, d time.Duration) { c.ops[op].Add(1) }
func (c *counter) Read(n int)                     { c.read.Add(int64(n)) }
func (c *counter) Write(n int)                    { c.written.Add(int64(n)) }
func (c *counter) AuthFailure()                   { c.auth.Add(1) }
func (c *counter) Mounted(took time.Duration)     { c.mounted.Add(1) }
func (c *counter) Unmounted()                     { c.unmounted.Add(1) }

func TestObserverHearsRequestsAndMounts(t *testing.T) {
	c := &counter{}
	m := newTestMountOpts(t, Options{Observer: c})
	if c.mounted.Load() != 1 {
		t.Fatalf("Mounted called %d times after one mount", c.mounted.Load())
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	if err := os.WriteFile(m.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if c.written.Load() != int64(len(data)) {
		t.Errorf("observed %d bytes written, wrote %d", c.written.Load(), len(data))
	}
	m.remount() // a cold cache: the read reaches us
	for i := 0; c.unmounted.Load() != 1 && i < 100; i++ {
		time.Sleep(10 * time.Millisecond) // the server's end is reported after Unmount returns
	}
	if c.unmounted.Load() != 1 || c.mounted.Load() != 2 {
		t.Errorf("after a remount: %d Mounted, %d Unmounted; want 2 and 1", c.mounted.Load(), c.unmounted.Load())
	}
	checkContent(t, m.path("f"), data)
	if c.read.Load() < int64(len(data)) {
		t.Errorf("observed %d bytes read, read %d", c.read.Load(), len(data))
	}
	listDir(t, m.dir)
	for _, op := range []Op{OpCreate, OpWrite, OpLookup, OpRead, OpOpenDir, OpReadDir} {
		if c.ops[op].Load() == 0 {
			t.Errorf("no %s request observed", op)
		}
	}
	if c.auth.Load() != 0 {
		t.Errorf("%d authentication failures without tampering", c.auth.Load())
	}
}

// TestObserverHearsAuthFailures tampers with each kind of stored data and
// checks that reading it is counted as an authentication failure.
func TestObserverHearsAuthFailures(t *testing.T) {
	tests := []struct {
		name string
		// setup makes the data and returns the backing path tamper changes.
		setup  func(t *testing.T, m *testMount) string
		tamper func(t *testing.T, p string)
		read   func(m *testMount) error
	}{{
		name: "block",
		setup: func(t *testing.T, m *testMount) string {
			writeFile(t, m.path("f"), bytes.Repeat([]byte("x"), 10000))
			return m.backingOf("f")
		},
		tamper: func(t *testing.T, p string) { patchFile(t, p, flipAt(crypto.BlockOffset(1)+7)) },
		read:   func(m *testMount) error { _, err := os.ReadFile(m.path("f")); return err },
	}, {
		name: "symlink target",
		setup: func(t *testing.T, m *testMount) string {
			if err := os.Symlink("somewhere", m.path("l")); err != nil {
				t.Fatal(err)
			}
			return m.backingOf("l")
		},
		tamper: func(t *testing.T, p string) {
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(p)
			if err := os.Symlink(target[:len(target)-2]+"AA", p); err != nil {
				t.Fatal(err)
			}
		},
		read: func(m *testMount) error { _, err := os.Readlink(m.path("l")); return err },
	}, {
		name: "directory IV",
		setup: func(t *testing.T, m *testMount) string {
			if err := os.Mkdir(m.path("d"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, m.path("d", "f"), []byte("x"))
			return filepath.Join(m.backingOf("d"), crypto.DirIVName)
		},
		tamper: func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		},
		read: func(m *testMount) error { _, err := os.ReadDir(m.path("d")); return err },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &counter{}
			m := newTestMountOpts(t, Options{Observer: c})
			p := tt.setup(t, m)
			m.offline(func() { tt.tamper(t, p) })
			if n := c.auth.Load(); n != 0 {
				t.Fatalf("%d authentication failures before the tampered data was read", n)
			}
			if err := tt.read(m); !isErrno(err, syscall.EIO) {
				t.Fatalf("reading tampered data: %v, want EIO", err)
			}
			if c.auth.Load() == 0 {
				t.Error("the authentication failure was not observed")
			}
		})
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flipAt returns a patch that flips one bit at off.
func flipAt(off int64) func([]byte) []byte {
	return func(b []byte) []byte { b[off] ^= 1; return b }
}
