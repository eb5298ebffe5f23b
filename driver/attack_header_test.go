package driver

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/attacktest"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// The attack suite's header cases (issue 7): a volume folder's
// securevol.conf replaced by something hostile. Every entry point that
// reads it (Get's Status, Mount, Start) must answer within 5 s with a
// clear error, use bounded memory, never follow a symlink or open a
// device, and never quote the bytes it found (not in errors, Status, the
// start report or the log). Remove must never act outside the folder.

// secretMarker is in every file a planted header points to.
const secretMarker = "SECRET-MARKER-7f3a9c"

// headerAttack replaces the header at conf. It returns the directory and
// name whose opening would show that the plant was followed or opened
// ("" if opening it is allowed).
type headerAttack struct {
	name  string
	plant func(t *testing.T, conf, host string) (dir, name string)
}

var headerAttacks = []headerAttack{
	{"sparse-100MiB", func(t *testing.T, conf, _ string) (string, string) {
		replaceWith(t, conf, func() error {
			if err := os.WriteFile(conf, nil, 0o400); err != nil {
				return err
			}
			return os.Truncate(conf, 100<<20)
		})
		return "", ""
	}},
	{"fifo", func(t *testing.T, conf, _ string) (string, string) {
		replaceWith(t, conf, func() error { return unix.Mkfifo(conf, 0o400) })
		return "", "" // an O_NONBLOCK open to learn the type is fine
	}},
	{"chr-null", func(t *testing.T, conf, _ string) (string, string) {
		replaceWith(t, conf, func() error { return unix.Mknod(conf, unix.S_IFCHR|0o400, int(unix.Mkdev(1, 3))) })
		return filepath.Dir(conf), filepath.Base(conf)
	}},
	// A JSON-shaped secret: its "id" would be quoted by a parse error.
	{"symlink-secret-json", func(t *testing.T, conf, host string) (string, string) {
		secret := writeHostFile(t, host, "secret.json", `{"format":1,"id":"`+secretMarker+`","content":"`+secretMarker+`"}`)
		replaceWith(t, conf, func() error { return os.Symlink(secret, conf) })
		return host, filepath.Base(secret)
	}},
	{"symlink-secret-text", func(t *testing.T, conf, host string) (string, string) {
		secret := writeHostFile(t, host, "secret.txt", secretMarker+" password=hunter2\n")
		replaceWith(t, conf, func() error { return os.Symlink(secret, conf) })
		return host, filepath.Base(secret)
	}},
}

// replaceWith removes the header and runs create to put something else in
// its place.
func replaceWith(t *testing.T, conf string, create func() error) {
	t.Helper()
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	if err := create(); err != nil {
		t.Fatal(err)
	}
}

// writeHostFile makes a file outside every backing folder.
func writeHostFile(t *testing.T, host, name, content string) string {
	t.Helper()
	p := filepath.Join(host, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// headerAllocLimit bounds what Get, Mount and Start together may allocate
// reading one planted header: a header is a few hundred bytes.
const headerAllocLimit = 48 << 20

func TestAttackHeader(t *testing.T) {
	testenv.RequireFUSE(t) // a Mount that wrongly succeeds mounts for real
	for _, a := range headerAttacks {
		t.Run(a.name, func(t *testing.T) { runHeaderAttack(t, a) })
	}
}

// runHeaderAttack plants the header in three volumes and asks Get, Mount
// and a fresh Start about one each, all at once, so that hangs overlap.
func runHeaderAttack(t *testing.T, a headerAttack) {
	host := t.TempDir()
	logs := &logCapture{}
	type target struct{ dir, name string }
	var targets []target
	newVictim := func() (*env, string) {
		e := newEnv(t, logs.opt())
		e.create("victim", nil)
		conf := filepath.Join(e.d.backing(e.record("victim").ID), crypto.HeaderName)
		if dir, name := a.plant(t, conf, host); dir != "" {
			targets = append(targets, target{dir, name})
		}
		return e, conf
	}
	eGet, confGet := newVictim()
	eMount, confMount := newVictim()
	eStart, confStart := newVictim()
	eStart.close()
	// Watched only once all are planted: planting writes the targets.
	var watches []*attacktest.Watch
	for _, tg := range targets {
		watches = append(watches, attacktest.WatchName(t, tg.dir, tg.name))
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var got *volume.GetResponse
	getOp := attacktest.Start(func() (err error) {
		got, err = eGet.d.Get(&volume.GetRequest{Name: "victim"})
		return err
	})
	mountOp := attacktest.Start(func() error {
		_, err := eMount.d.Mount(&volume.MountRequest{Name: "victim", ID: "c1"})
		return err
	})
	var started *startedDriver
	startOp := attacktest.Start(func() (err error) {
		started, err = startDriver(eStart, logs)
		return err
	})
	t.Cleanup(func() {
		// Let operations hung on a FIFO end before their envs close.
		attacktest.UnblockUntil([]*attacktest.Op{getOp, mountOp, startOp}, confGet, confMount, confStart)
		if startOp.Finished() && started != nil {
			started.close()
		}
	})
	getErr, mountErr, startErr := getOp.Wait(), mountOp.Wait(), startOp.Wait()
	runtime.ReadMemStats(&after)

	var shown []string // every text the attacker's bytes could reach
	switch {
	case getErr == attacktest.ErrHung:
		t.Error("Get hung")
	case getErr != nil:
		shown = append(shown, getErr.Error())
	default:
		shown = append(shown, fmt.Sprint(got.Volume.Status))
		if got.Volume.Status["state"] == "ok" {
			t.Errorf("Get: state ok with a planted header: %v", got.Volume.Status)
		}
	}
	switch {
	case mountErr == attacktest.ErrHung:
		t.Error("Mount hung")
	case mountErr == nil:
		t.Error("Mount succeeded with a planted header")
	default:
		shown = append(shown, mountErr.Error())
		if !strings.Contains(mountErr.Error(), "header") && !strings.Contains(mountErr.Error(), crypto.HeaderName) {
			t.Errorf("Mount error does not say the header is at fault: %v", mountErr)
		}
	}
	switch {
	case startErr == attacktest.ErrHung:
		t.Error("Start hung")
	case startErr != nil:
		shown = append(shown, startErr.Error())
	default:
		shown = append(shown, started.report.Problems...)
	}
	shown = append(shown, logs.String())
	for _, s := range shown {
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, secretMarker) {
				t.Errorf("the planted header's target is quoted: %s", line)
			}
		}
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > headerAllocLimit {
		t.Errorf("Get, Mount and Start allocated %d MiB over a planted header (limit %d MiB)", n>>20, headerAllocLimit>>20)
	}
	for _, w := range watches {
		if ev := w.Events(); len(ev) > 0 {
			t.Errorf("the planted header was followed or opened:\n  %s", strings.Join(ev, "\n  "))
		}
	}
	t.Logf("Get: %v; Mount: %v; Start: %v", getErr, mountErr, startErr)
}

// startedDriver is a driver started by startDriver.
type startedDriver struct {
	d      *Driver
	st     *store.Store
	report *StartReport
}

func (s *startedDriver) close() {
	s.d.Close()
	s.st.Close()
}

// startDriver starts a driver over e's directories like env.open, but
// returns errors instead of failing the test, so it can run in the
// background.
func startDriver(e *env, logs *logCapture) (*startedDriver, error) {
	st, err := store.Open(filepath.Join(e.stateDir, "securevol.db"), time.Second)
	if err != nil {
		return nil, err
	}
	d, err := New(Config{StateDir: e.stateDir, MountRoot: e.mountRoot, Store: st,
		Keys: []crypto.KeySource{crypto.StaticKey{Key: e.key}}, Log: logs.entry()})
	if err != nil {
		st.Close()
		return nil, err
	}
	rep, err := d.Start()
	if err != nil {
		d.Close()
		st.Close()
		return nil, err
	}
	return &startedDriver{d: d, st: st, report: rep}, nil
}

// logCapture keeps what drivers log, to search it.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) entry() *logrus.Entry {
	log := logrus.New()
	log.SetOutput(l)
	log.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(log)
}

// opt makes an env log into l.
func (l *logCapture) opt() envOpt {
	return func(c *Config) { c.Log = l.entry() }
}

// TestAttackRemoveHeader: docker volume rm destroys the key in
// securevol.conf. When that is a symlink or hard link to a file outside
// the folder, a FIFO or a device, Remove must answer within 5 s and
// leave everything outside the folder as it was (the target may be the
// master key: zeroing it loses every volume).
func TestAttackRemoveHeader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, conf, target string)
	}{
		{"symlink", func(t *testing.T, conf, target string) {
			replaceWith(t, conf, func() error { return os.Symlink(target, conf) })
		}},
		{"hardlink", func(t *testing.T, conf, target string) {
			replaceWith(t, conf, func() error { return os.Link(target, conf) })
		}},
		{"fifo", func(t *testing.T, conf, _ string) {
			replaceWith(t, conf, func() error { return unix.Mkfifo(conf, 0o600) })
		}},
		{"chr-null", func(t *testing.T, conf, _ string) {
			replaceWith(t, conf, func() error { return unix.Mknod(conf, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.create("victim", nil)
			dir := e.d.backing(e.record("victim").ID)
			conf := filepath.Join(dir, crypto.HeaderName)
			host := t.TempDir()
			target := writeHostFile(t, host, "master.key", "the master key: "+secretMarker)
			tc.plant(t, conf, target)

			before := attacktest.Snapshot(t, host)
			keyBefore, _ := os.ReadFile(target)
			w := attacktest.WatchName(t, dir, crypto.HeaderName)
			op := attacktest.Start(func() error { return e.d.Remove(&volume.RemoveRequest{Name: "victim"}) })
			t.Cleanup(func() { attacktest.UnblockUntil([]*attacktest.Op{op}, conf) })
			err := op.Wait()
			t.Logf("Remove: %v", err)
			if err == attacktest.ErrHung {
				t.Error("Remove hung")
			}
			if tc.name == "hardlink" {
				// Unlinking the planted name inside the folder drops the
				// outside file's link count (and so its ctime): that much
				// the attacker arranged. Its contents must stay.
				if after, _ := os.ReadFile(target); !bytes.Equal(after, keyBefore) {
					t.Errorf("Remove wrote through a hard-linked header into %s", target)
				}
			} else if changed := before.Diff(attacktest.Snapshot(t, host)); len(changed) > 0 {
				t.Errorf("Remove changed files outside the folder (under %s):\n  %s", host, strings.Join(changed, "\n  "))
			}
			if tc.name == "chr-null" {
				// Deleting the planted node is fine; opening it is not.
				var ev []string
				for _, e := range w.Events() {
					if !strings.HasSuffix(e, ": deleted") {
						ev = append(ev, e)
					}
				}
				if len(ev) > 0 {
					t.Errorf("Remove opened the device planted as the header:\n  %s", strings.Join(ev, "\n  "))
				}
			}
		})
	}
}
