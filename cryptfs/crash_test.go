package cryptfs

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
)

// The kill -9 test runs the FUSE server in a child process (this test
// binary again, in TestCrashHelperProcess) so that it can be killed while
// it is in the middle of an operation, as the OOM killer or a crash would.

const crashHelperEnv = "SECUREVOL_CRASH_HELPER" // backing folder|mountpoint|hex master key

// TestCrashHelperProcess is not a test: run by TestKill9 with
// crashHelperEnv set, it serves one mount until killed.
func TestCrashHelperProcess(t *testing.T) {
	spec := os.Getenv(crashHelperEnv)
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|")
	raw, err := hex.DecodeString(parts[2])
	if err != nil {
		fmt.Println("bad key:", err)
		os.Exit(2)
	}
	mk, err := crypto.NewMasterKey(raw)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	var keys *crypto.VolumeKeys
	if err := backing.WithRoot(parts[0], func(root *backing.Dir) (err error) {
		_, keys, err = backing.OpenVolume(root, crypto.StaticKey{Key: mk})
		return err
	}); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	l := logrus.New()
	l.SetOutput(os.Stderr)
	if _, err := Mount(parts[0], parts[1], keys, Options{Log: logrus.NewEntry(l), FsName: "securevol-crash"}); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	fmt.Println("ready")
	select {}
}

// crashServer is one child process serving the mount.
type crashServer struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func startCrashServer(t *testing.T, spec string) *crashServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+spec)
	// Gone with the test process, should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &crashServer{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = s.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("mount helper: %q %s", line, s.stderr)
	}
	return s
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *crashServer) kill() {
	s.cmd.Process.Signal(unix.SIGKILL)
	s.cmd.Wait()
}

// crashOp is one change to the file: what it holds before and after.
type crashOp struct {
	what      string
	old, new  []byte
	apply     func(f *os.File) error
	truncates bool
}

// nextCrashOp picks a change that rewrites a block in place while keeping
// part of it: truncations and extensions that end mid-block, appends to a
// partial last block, and writes into part of a block (one or two).
func nextCrashOp(rng *mrand.Rand, cur []byte) crashOp {
	const maxSize = 48 << 10
	n := len(cur)
	midBlock := func(lo, hi int) int { // a size in [lo, hi) that is not a multiple of 4096
		for {
			if s := lo + rng.IntN(hi-lo); s%4096 != 0 {
				return s
			}
		}
	}
	op := crashOp{old: cur}
	switch k := rng.IntN(5); {
	case n > 1 && (k == 0 || n > maxSize):
		size := midBlock(max(1, n-3*4096), n)
		op.what = fmt.Sprintf("truncate %d -> %d", n, size)
		op.new = cur[:size]
		op.apply = func(f *os.File) error { return f.Truncate(int64(size)) }
		op.truncates = true
	case k == 1:
		size := midBlock(n+1, n+6000)
		op.what = fmt.Sprintf("truncate %d -> %d", n, size)
		op.new = append(bytes.Clone(cur), make([]byte, size-n)...)
		op.apply = func(f *os.File) error { return f.Truncate(int64(size)) }
		op.truncates = true
	default:
		off := n
		switch k {
		case 3: // inside the last block
			off = max(0, n-1-rng.IntN(max(1, min(n, 4096))))
		case 4: // anywhere, often across a block edge
			off = rng.IntN(max(1, n))
		}
		data := make([]byte, 1+rng.IntN(6000))
		rand.Read(data)
		if k != 2 {
			data = data[:min(len(data), 200)]
		}
		op.what = fmt.Sprintf("write %d bytes at %d (size %d)", len(data), off, n)
		op.new = bytes.Clone(cur)
		if end := off + len(data); end > n {
			op.new = append(op.new, make([]byte, end-n)...)
		}
		copy(op.new[off:], data)
		op.apply = func(f *os.File) error { _, err := f.WriteAt(data, int64(off)); return err }
	}
	return op
}

// crashWriter changes the file through the mount, each change made
// durable (O_DSYNC, or an fsync), until an operation fails (the server
// was killed). It
// reports the operation that was in flight then, if any, and the content
// before it.
type crashWriter struct {
	model    []byte   // content after the last operation that returned
	inFlight *crashOp // the operation that did not return, if any
	ops      int
}

func (w *crashWriter) run(rng *mrand.Rand, path string, wg *sync.WaitGroup) {
	defer wg.Done()
	// O_DSYNC: each write reaches the disk before it returns, as if
	// fsynced, without another round trip; a truncation needs its fsync.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DSYNC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	for {
		op := nextCrashOp(rng, w.model)
		w.inFlight = &op
		err := op.apply(f)
		if err == nil && op.truncates {
			err = f.Sync()
		}
		if err != nil {
			return
		}
		w.model, w.inFlight = op.new, nil
		w.ops++
	}
}

// checkRecovered says how got, read back after the kill, breaks the
// invariant: with no operation in flight it is the model; with one, every
// byte is the old or the new value and the size is between the old and
// the new size. ("" if it holds.)
func checkRecovered(got, model []byte, op *crashOp) string {
	if op == nil {
		if !bytes.Equal(got, model) {
			return fmt.Sprintf("no operation in flight, but %d bytes differ from the %d expected (first at %d)", countDiff(got, model), len(model), firstDiff(got, model))
		}
		return ""
	}
	lo, hi := min(len(op.old), len(op.new)), max(len(op.old), len(op.new))
	if len(got) < lo || len(got) > hi {
		return fmt.Sprintf("%s in flight: size %d, want between %d and %d", op.what, len(got), lo, hi)
	}
	for i, c := range got {
		if (i < len(op.old) && c == op.old[i]) || (i < len(op.new) && c == op.new[i]) {
			continue
		}
		return fmt.Sprintf("%s in flight: byte %d is neither old nor new", op.what, i)
	}
	return ""
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func countDiff(a, b []byte) int {
	d := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			d++
		}
	}
	return d
}

const crashFiles = 4

func crashPath(mnt string, i int) string { return filepath.Join(mnt, fmt.Sprint("f", i)) }

// writeSynced creates file p with data and fsyncs it.
func writeSynced(p string, data []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// repairKinds are the log messages of repairTail's repairs.
var repairKinds = []string{"from its redo record", "cut the file after its complete version", "dropped the incomplete last block"}

// TestKill9 kills the FUSE server with SIGKILL at random moments while a
// writer keeps rewriting blocks in place (see nextCrashOp) and fsyncing,
// then mounts again and reads the file back: it must read without EIO,
// every byte the operation in flight (a change or its fsync) was not
// changing must be as last written, and the bytes it was changing must
// each be old or new (recover.go).
func TestKill9(t *testing.T) {
	testenv.RequireFUSE(t)
	raw := make([]byte, 32)
	rand.Read(raw)
	mk, err := crypto.NewMasterKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	// The backing folder on a tmpfs of its own: fsync costs nothing there,
	// so most kills land in the middle of a change rather than of an fsync.
	base := t.TempDir()
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, "size=64m"); err != nil {
		testenv.Missing(t, fmt.Sprintf("mount tmpfs: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	back, mnt := filepath.Join(base, "backing"), filepath.Join(t.TempDir(), "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := backing.WithRoot(back, func(root *backing.Dir) error {
		_, _, err := backing.InitVolume(root, crypto.StaticKey{Key: mk}, "", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	spec := back + "|" + mnt + "|" + hex.EncodeToString(raw)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 7))

	srv := startCrashServer(t, spec)
	t.Cleanup(func() {
		srv.kill()
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	// One writer per file, all at once: more operations are in flight at
	// each kill.
	models := make([][]byte, crashFiles)
	for i := range models {
		models[i] = make([]byte, 5*4096+1234*i)
		rand.Read(models[i])
		if err := writeSynced(crashPath(mnt, i), models[i]); err != nil {
			t.Fatal(err)
		}
	}

	budget := 6 * time.Second
	if testing.Short() {
		budget = 2 * time.Second
	}
	deadline := time.Now().Add(budget)
	kills, inFlight, ops := 0, 0, 0
	repairs := map[string]int{}
	for time.Now().Before(deadline) {
		writers := make([]*crashWriter, crashFiles)
		var wg sync.WaitGroup
		for i := range writers {
			w := &crashWriter{model: models[i]}
			writers[i] = w
			wg.Add(1)
			go w.run(mrand.New(mrand.NewPCG(rng.Uint64(), 1)), crashPath(mnt, i), &wg)
		}
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
		srv.kill()
		wg.Wait()
		kills++
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Fatalf("detach the dead mount: %v", err)
		}
		logs := srv.stderr.String()
		if strings.Contains(logs, "authentication") {
			t.Fatalf("kill %d: the server reported a tamper:\n%s", kills, logs)
		}
		for _, r := range repairKinds {
			repairs[r] += strings.Count(logs, r)
		}
		srv = startCrashServer(t, spec)
		for i, w := range writers {
			ops += w.ops
			what := "none"
			if w.inFlight != nil {
				inFlight++
				what = w.inFlight.what
			}
			got, err := os.ReadFile(crashPath(mnt, i))
			if err != nil {
				srv.kill()
				t.Fatalf("kill %d, file %d (in flight: %s): reading it back: %v\n%s", kills, i, what, err, srv.stderr)
			}
			if msg := checkRecovered(got, w.model, w.inFlight); msg != "" {
				t.Fatalf("kill %d, file %d: %s", kills, i, msg)
			}
			if fi, err := os.Stat(crashPath(mnt, i)); err != nil || fi.Size() != int64(len(got)) {
				t.Fatalf("kill %d, file %d: stat after reading %d bytes: %v, %v", kills, i, len(got), fi, err)
			}
			models[i] = got
		}
	}
	srv.kill()
	if msg := srv.stderr.String(); strings.Contains(msg, "authentication") {
		t.Errorf("tamper reports: %s", msg)
	}
	t.Logf("%d kills, %d operations in flight at them, %d completed; repairs: %v", kills, inFlight, ops, repairs)
	if kills < 20 || inFlight < kills {
		t.Errorf("too few operations in flight (%d at %d kills) to show anything", inFlight, kills)
	}
}
