package cryptfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// The writers below keep invariants that hold after a crash at any
// moment, the way a database keeps its own; a snapshot taken under
// Freeze must keep them too. Without the freeze the copy does not even
// complete: files vanish under cp.

// logRecord is one record of the chained log: its length, its sequence
// number, data, and the SHA-256 of the previous record's hash, the number
// and the data. A record missing, changed or torn anywhere but at the end
// breaks the chain.
func logRecord(prev [32]byte, seq uint64) ([]byte, [32]byte) {
	data := pattern(int(seq), 1+int(seq*977%6000))
	var hdr [12]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	binary.BigEndian.PutUint64(hdr[4:], seq)
	h := sha256.New()
	h.Write(prev[:])
	h.Write(hdr[4:])
	h.Write(data)
	var sum [32]byte
	h.Sum(sum[:0])
	rec := append(append(hdr[:], data...), sum[:]...)
	return rec, sum
}

// checkLog verifies a chained log as a crash would leave it: whole
// records, then at most the start of the next one (the kernel splits a
// write(2) that does not start on a page boundary into one request up to
// that boundary and another for the rest, and a snapshot, like a crash,
// may fall in between). It returns the count of whole records.
func checkLog(b []byte) (int, error) {
	var prev [32]byte
	n := 0
	for len(b) > 0 {
		want, sum := logRecord(prev, uint64(n))
		if len(b) < len(want) {
			if !bytes.HasPrefix(want, b) {
				return n, fmt.Errorf("record %d: the %d bytes after the last whole record are not its start", n, len(b))
			}
			return n, nil
		}
		if !bytes.Equal(b[:len(want)], want) {
			return n, fmt.Errorf("record %d is wrong", n)
		}
		b, prev = b[len(want):], sum
		n++
	}
	return n, nil
}

// stateBody is what the rename writer's state file holds at generation
// seq: the number, data, and their hash.
func stateBody(seq int) []byte {
	body := append([]byte(strconv.Itoa(seq)+"\n"), pattern(seq+1000, 100+seq*131%9000)...)
	sum := sha256.Sum256(body)
	return append(body, sum[:]...)
}

func checkState(b []byte) (int, error) {
	if len(b) < 32 {
		return 0, fmt.Errorf("state holds %d bytes", len(b))
	}
	body := b[:len(b)-32]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(b)-32:]) {
		return 0, errors.New("state's checksum does not match: a torn file")
	}
	seq, err := strconv.Atoi(string(body[:bytes.IndexByte(body, '\n')]))
	if err != nil || !bytes.Equal(body, stateBody(seq)[:len(body)]) {
		return 0, errors.New("state holds another generation's data")
	}
	return seq, nil
}

// writers keeps three invariant-keeping writers busy on m until stop is
// closed, and returns once they have ended, with the first error.
func runWriters(m *testMount, stop <-chan struct{}) func() error {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	fail := func(err error) {
		if err != nil {
			first.CompareAndSwap(nil, &err)
		}
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	// A chained log, appended by single writes of 13 to 6044 bytes (most
	// end inside a block), fsynced now and then so that later writes
	// rewrite synced blocks through redo records.
	wg.Go(func() {
		f, err := os.Create(m.path("log"))
		if err != nil {
			fail(err)
			return
		}
		defer f.Close()
		var prev [32]byte
		for seq := uint64(0); !stopped(); seq++ {
			var rec []byte
			rec, prev = logRecord(prev, seq)
			if _, err := f.Write(rec); err != nil {
				fail(err)
				return
			}
			if seq%7 == 0 {
				fail(f.Sync())
			}
		}
	})
	// A state file replaced by rename, written in two halves and chmodded
	// in between, so a torn temporary file exists most of the time.
	wg.Go(func() {
		for seq := 0; !stopped(); seq++ {
			body := stateBody(seq)
			tmp := m.path("state.tmp")
			f, err := os.Create(tmp)
			if err == nil {
				_, err = f.Write(body[:len(body)/2])
			}
			if err == nil {
				err = f.Chmod(0o600)
			}
			if err == nil {
				_, err = f.Write(body[len(body)/2:])
			}
			if f != nil {
				f.Close()
			}
			if err == nil {
				err = os.Rename(tmp, m.path("state"))
			}
			if err != nil {
				fail(err)
				return
			}
		}
	})
	// Directories gen-N, each holding f = N, made under a temporary name
	// and retired by a rename before they are emptied.
	wg.Go(func() {
		for seq := 0; !stopped(); seq++ {
			tmp := m.path("gen.tmp")
			err := os.Mkdir(tmp, 0o755)
			if err == nil {
				err = os.WriteFile(filepath.Join(tmp, "f"), []byte(strconv.Itoa(seq)), 0o644)
			}
			if err == nil {
				err = unix.Setxattr(tmp, "user.gen", []byte(strconv.Itoa(seq)), 0)
			}
			if err == nil {
				err = os.Rename(tmp, m.path(fmt.Sprintf("gen-%d", seq)))
			}
			if err == nil && seq > 0 {
				old, trash := m.path(fmt.Sprintf("gen-%d", seq-1)), m.path("trash")
				err = os.Rename(old, trash)
				if err == nil {
					err = os.Remove(filepath.Join(trash, "f"))
				}
				if err == nil {
					err = os.Remove(trash)
				}
			}
			if err != nil {
				fail(err)
				return
			}
		}
	})
	return func() error {
		wg.Wait()
		if p := first.Load(); p != nil {
			return *p
		}
		return nil
	}
}

// checkSnapshot mounts a copy of a backing folder and checks every
// invariant; it returns the log's record count.
func checkSnapshot(t *testing.T, m *testMount, dir string) int {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(dir, mnt, m.keys, Options{Log: logrus.NewEntry(logger)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	records := 0
	if b, err := os.ReadFile(filepath.Join(mnt, "log")); err == nil {
		if records, err = checkLog(b); err != nil {
			t.Errorf("%s: log after %d good records: %v", dir, records, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: read log: %v", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "state")); err == nil {
		if _, err := checkState(b); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: read state: %v", dir, err)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), "gen-")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(mnt, e.Name(), "f"))
		x := make([]byte, 16)
		xn, xerr := unix.Getxattr(filepath.Join(mnt, e.Name()), "user.gen", x)
		if err != nil || string(b) != n || xerr != nil || string(x[:xn]) != n {
			t.Errorf("%s: %s holds %q (%v), xattr %q (%v)", dir, e.Name(), b, err, x[:max(xn, 0)], xerr)
		}
	}
	// Nothing needed repair: no request was cut in half.
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("%s: mounting the snapshot logged %q", dir, e.Message)
		}
	}
	return records
}

// TestFreezeSnapshotsKeepInvariants copies the backing folder under Freeze
// while three writers work, and each copy, mounted, keeps every writer's
// invariant: a chained log torn at most at its end, a state file that is
// one complete generation, generation directories with their contents.
func TestFreezeSnapshotsKeepInvariants(t *testing.T) {
	fz := NewFreezer()
	m := newTestMountOpts(t, Options{Freezer: fz})
	stop := make(chan struct{})
	wait := runWriters(m, stop)
	var snaps []string
	var held time.Duration
	for i := range 8 {
		time.Sleep(60 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		thaw, err := fz.Freeze(ctx)
		cancel()
		if err != nil {
			close(stop)
			wait()
			t.Fatalf("freeze %d: %v", i, err)
		}
		dst := filepath.Join(t.TempDir(), "snap")
		out, err := exec.Command("cp", "-a", m.backing, dst).CombinedOutput()
		thaw()
		held = max(held, time.Since(start))
		if err != nil {
			close(stop)
			wait()
			t.Fatalf("copy: %v: %s", err, out)
		}
		snaps = append(snaps, dst)
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatalf("a writer failed: %v", err)
	}
	t.Logf("longest freeze (copy included): %v", held)
	most := 0
	for _, s := range snaps {
		most = max(most, checkSnapshot(t, m, s))
	}
	if most == 0 {
		t.Fatal("no snapshot holds a log record: the writers did not run")
	}
}

// TestFreezeHoldsChangesNotReads: while frozen, a create and a mkdir wait
// and the backing folder stays as it was; reads, stats and listings
// elsewhere go on (the kernel itself keeps a directory with a create held
// locked: hence the subdirectory). After the thaw the held requests
// complete.
func TestFreezeHoldsChangesNotReads(t *testing.T) {
	fz := NewFreezer()
	m := newTestMountOpts(t, Options{Freezer: fz})
	writeFile(t, m.path("a"), []byte("before"))
	if err := os.Mkdir(m.path("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	thaw, err := fz.Freeze(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(thaw) // before the unmount: a held request would block it
	before := m.backingFiles()
	done := make(chan error, 2)
	go func() { done <- os.WriteFile(m.path("sub", "b"), []byte("after"), 0o644) }()
	go func() { done <- os.Mkdir(m.path("sub", "d"), 0o755) }()
	select {
	case err := <-done:
		thaw()
		t.Fatalf("a change went through a freeze (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if b, err := os.ReadFile(m.path("a")); err != nil || string(b) != "before" {
		t.Errorf("read while frozen: %q, %v", b, err)
	}
	if ents, err := os.ReadDir(m.dir); err != nil || len(ents) != 2 {
		t.Errorf("list while frozen: %v, %v", ents, err)
	}
	if after := m.backingFiles(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the backing folder changed while frozen: %v, then %v", before, after)
	}
	// One freeze at a time: a second gives up when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fz.Freeze(ctx); !errors.Is(err, ErrFreezeTimeout) {
		t.Errorf("second freeze: %v, want ErrFreezeTimeout", err)
	}
	thaw()
	thaw() // a second call does nothing
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("held change: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a held change did not complete after the thaw")
		}
	}
	if b := readFile(t, m.path("sub", "b")); string(b) != "after" {
		t.Errorf("after the thaw: %q", b)
	}
}

// TestFreezeTimeout: a request in flight that does not finish makes Freeze
// give up when its context ends, and then holds nothing; once it
// finishes, a freeze succeeds and holds new requests until the thaw.
func TestFreezeTimeout(t *testing.T) {
	fz := NewFreezer()
	if !fz.enter(nil) {
		t.Fatal("enter refused without a freeze")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := fz.Freeze(ctx); !errors.Is(err, ErrFreezeTimeout) {
		t.Fatalf("freeze with a request in flight: %v, want ErrFreezeTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the freeze gave up after %v", d)
	}
	entered := make(chan bool, 1)
	go func() { entered <- fz.enter(nil) }()
	select {
	case <-entered:
		fz.leave()
	case <-time.After(2 * time.Second):
		t.Fatal("a request waits after the freeze gave up")
	}
	fz.leave()
	thaw, err := fz.Freeze(context.Background())
	if err != nil {
		t.Fatalf("freeze with nothing in flight: %v", err)
	}
	cancelled := make(chan struct{})
	go func() { entered <- fz.enter(cancelled) }()
	select {
	case <-entered:
		t.Fatal("a request entered a frozen gate")
	case <-time.After(100 * time.Millisecond):
	}
	close(cancelled)
	if ok := <-entered; ok {
		t.Error("an interrupted request was admitted")
	}
	go func() { entered <- fz.enter(nil) }()
	thaw()
	select {
	case ok := <-entered:
		if !ok {
			t.Error("a request was refused after the thaw")
		}
		fz.leave()
	case <-time.After(2 * time.Second):
		t.Fatal("a request still waits after the thaw")
	}
	if n := fz.active.Load(); n != 0 {
		t.Errorf("%d requests counted in flight at the end", n)
	}
}

// BenchmarkFreezerGate is what the gate adds to each changing request
// when nothing is frozen, with every core passing it at once.
func BenchmarkFreezerGate(b *testing.B) {
	fz := NewFreezer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			fz.enter(nil)
			fz.leave()
		}
	})
}
