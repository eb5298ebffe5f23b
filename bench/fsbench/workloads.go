package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/securevol/securevol/internal/benchwork"
)

// unit says how a workload's result reads: a speed (higher is better) or
// a duration (lower is better).
type unit int

const (
	speedMBps unit = iota // decimal MB per second
	seconds
	iops // I/O operations per second
	tps  // database transactions per second
)

// higherIsBetter: rates (MB/s, IOPS, tps) against durations.
func (u unit) higherIsBetter() bool { return u != seconds }

// workload is one row of the table. prep runs untimed before the timed
// part (syncing and dropping caches), check untimed after it (verifying
// the result, so a filesystem cannot win by doing nothing).
type workload struct {
	key    string
	title  string
	unit   unit
	needs  []string // workloads that must run first in the same round
	target float64  // 0: informational, no target
	prep   func(e *env) error
	timed  func(e *env) (float64, error)
	check  func(e *env) error
}

// env is what one round on one filesystem works with.
type env struct {
	ctx      context.Context
	root     string
	round    int
	src      *tarball
	size     int64
	chunk    []byte // 1 MiB of random bytes, stamped per MiB
	file     string
	tree     string
	files    int                  // regular files ls -lR listed
	duration time.Duration        // of each database workload's timed run
	fio      *benchwork.FioResult // what the randwrite row's fio reported
	sqlite   *sqliteRun
	postgres *postgres // the installation (nil: not found)
	pg       *pgCluster
	// cleanups run when the round ends, however it ends (a database
	// server must not outlive it).
	cleanups []func()
}

const chunkSize = 1 << 20

// The targets for securevol, as ratios to the plain directory:
// speeds at least, times at most.
var allWorkloads = []*workload{
	{
		key: "write", title: "seq write + fsync", unit: speedMBps, target: 0.85,
		timed: timedWrite,
	},
	{
		key: "read", title: "seq read, cold", unit: speedMBps, target: 0.8, needs: []string{"write"},
		prep: func(e *env) error { return dropCaches() }, timed: timedRead,
		check: func(e *env) error { return os.Remove(e.file) },
	},
	{
		key: "untar", title: "untar", unit: seconds, target: 3,
		prep: prepUntar,
		timed: func(e *env) (float64, error) {
			return timeCmd(e.ctx, nil, "tar", "-xf", e.src.path, "-C", e.tree)
		},
	},
	{
		key: "sync", title: "sync after untar (info)", unit: seconds, needs: []string{"untar"},
		timed: func(e *env) (float64, error) {
			t0 := time.Now()
			syscall.Sync()
			return time.Since(t0).Seconds(), nil
		},
	},
	{
		key: "lscold", title: "ls -lR, cold", unit: seconds, target: 2, needs: []string{"untar"},
		prep: func(e *env) error { return dropCaches() }, timed: timedLs, check: checkLs,
	},
	{
		key: "lswarm", title: "ls -lR, warm", unit: seconds, target: 3, needs: []string{"untar"},
		timed: timedLs, check: checkLs,
	},
	{
		key: "rm", title: "rm -rf", unit: seconds, target: 2, needs: []string{"untar"},
		prep: func(e *env) error { syscall.Sync(); return nil },
		timed: func(e *env) (float64, error) {
			return timeCmd(e.ctx, nil, "rm", "-rf", e.tree)
		},
		check: checkRm,
	},
	// The database rows run last: each cleans up after itself, and rm's
	// check wants an empty root.
	{
		key: "randwrite", title: "fio randwrite 8 KiB + fdatasync, 4 jobs", unit: iops, target: 0.8,
		prep: prepFio, timed: timedFio, check: checkFio,
	},
	{
		key: "sqliteload", title: "SQLite load (info)", unit: seconds,
		prep: prepSqlite, timed: timedSqliteLoad, check: checkSqliteLoad,
	},
	{
		key: "sqlite", title: "SQLite TPC-B-like, WAL, synchronous=FULL", unit: tps, target: 0.85, needs: []string{"sqliteload"},
		prep: func(e *env) error { syscall.Sync(); return nil }, timed: timedSqlite, check: checkSqlite,
	},
	{
		key: "pgload", title: "pgbench -i -s 5 load (info)", unit: seconds,
		prep: prepPg, timed: timedPgLoad, check: checkPgLoad,
	},
	{
		key: "pgbench", title: "pgbench -c 4 -j 2, fsync on", unit: tps, target: 0.85, needs: []string{"pgload"},
		prep: func(e *env) error { syscall.Sync(); return nil }, timed: timedPgbench, check: checkPgbench,
	},
}

func workloadKeys() []string {
	var k []string
	for _, w := range allWorkloads {
		k = append(k, w.key)
	}
	return k
}

// selectWorkloads returns the chosen workloads and those they need, in
// table order.
func selectWorkloads(chosen map[string]bool) ([]*workload, error) {
	if chosen == nil {
		return allWorkloads, nil
	}
	byKey := map[string]*workload{}
	for _, w := range allWorkloads {
		byKey[w.key] = w
	}
	want := map[string]bool{}
	var add func(k string) error
	add = func(k string) error {
		w, ok := byKey[k]
		if !ok {
			return fmt.Errorf("unknown workload %q (have %s)", k, strings.Join(workloadKeys(), ", "))
		}
		want[k] = true
		for _, n := range w.needs {
			if err := add(n); err != nil {
				return err
			}
		}
		return nil
	}
	for k := range chosen {
		if err := add(k); err != nil {
			return nil, err
		}
	}
	var out []*workload
	for _, w := range allWorkloads {
		if want[w.key] {
			out = append(out, w)
		}
	}
	return out, nil
}

// runRound runs every workload once on f, in order.
func runRound(ctx context.Context, f *filesystem, wls []*workload, src *tarball, round int, rep *report) error {
	e := &env{
		ctx:      ctx,
		root:     f.root,
		round:    round,
		src:      src,
		size:     int64(f.cfg.sizeMiB) * chunkSize,
		file:     filepath.Join(f.root, fmt.Sprintf("seq-%d.dat", round)),
		tree:     filepath.Join(f.root, fmt.Sprintf("tree-%d", round)),
		duration: f.cfg.dbDuration,
		postgres: f.cfg.postgres,
	}
	defer func() {
		for i := len(e.cleanups) - 1; i >= 0; i-- {
			e.cleanups[i]()
		}
	}()
	e.chunk = make([]byte, chunkSize)
	if _, err := rand.Read(e.chunk); err != nil {
		return err
	}
	// Start from a quiet disk: nothing the previous filesystem left
	// dirty may be flushed while this one is timed.
	if err := dropCaches(); err != nil {
		return err
	}
	var err error
	for _, w := range wls {
		if w.prep != nil {
			if err := w.prep(e); err != nil {
				return fmt.Errorf("%s: prepare: %w", w.key, err)
			}
		}
		var stopPerf func() error
		if f.cfg.perf && round == 0 && f.cmd != nil {
			if stopPerf, err = startPerf(ctx, f, w.key); err != nil {
				return err
			}
		}
		cpu0, log0, t0 := f.cpuSeconds(), f.logSize(), time.Now()
		var v float64
		v, err = w.timed(e)
		wall, cpu, log1 := time.Since(t0).Seconds(), f.cpuSeconds()-cpu0, f.logSize()
		if stopPerf != nil {
			if perr := stopPerf(); perr != nil && err == nil {
				err = perr
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w.key, err)
		}
		if w.check != nil {
			if err := w.check(e); err != nil {
				return fmt.Errorf("%s: check: %w", w.key, err)
			}
		}
		s := sample{value: v, cpu: cpu, wall: wall}
		if f.cfg.opcounts {
			if s.ops, err = f.countOps(log0, log1); err != nil {
				return fmt.Errorf("%s: count requests: %w", w.key, err)
			}
		}
		rep.add(f.name, w.key, s)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	// Leave nothing behind for the next round (only when a subset ran).
	os.Remove(e.file)
	if _, err := os.Lstat(e.tree); err == nil {
		if err := os.RemoveAll(e.tree); err != nil {
			return fmt.Errorf("clean up %s: %w", e.tree, err)
		}
	}
	return nil
}

// stamp marks a chunk with its index, so a read that returns the wrong
// MiB (or stale data) is caught.
func stamp(chunk []byte, i int64) { binary.BigEndian.PutUint64(chunk, uint64(i)) }

// timedWrite writes e.size bytes in 1 MiB write(2)s, then fsyncs and
// closes: the speed includes getting the data to disk.
func timedWrite(e *env) (float64, error) {
	t0 := time.Now()
	f, err := os.OpenFile(e.file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	for i := int64(0); i < e.size/chunkSize; i++ {
		if err := e.ctx.Err(); err != nil {
			f.Close()
			return 0, err
		}
		stamp(e.chunk, i)
		if _, err := f.Write(e.chunk); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return float64(e.size) / time.Since(t0).Seconds() / 1e6, nil
}

// timedRead reads the file back in 1 MiB read(2)s and spot-checks the
// first and last 4 KiB of every MiB (a full compare would cost more than
// the read on a fast disk and blur the ratios).
func timedRead(e *env) (float64, error) {
	buf := make([]byte, chunkSize)
	want := e.chunk
	t0 := time.Now()
	f, err := os.Open(e.file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for i := int64(0); ; i++ {
		if err := e.ctx.Err(); err != nil {
			return 0, err
		}
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			stamp(want, i)
			if n != chunkSize || !bytes.Equal(buf[:4096], want[:4096]) || !bytes.Equal(buf[n-4096:n], want[n-4096:n]) {
				return 0, fmt.Errorf("MiB %d read back differs from what was written", i)
			}
			total += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	d := time.Since(t0)
	if total != e.size {
		return 0, fmt.Errorf("read %d bytes, wrote %d", total, e.size)
	}
	return float64(total) / d.Seconds() / 1e6, nil
}

// prepUntar makes the target directory and pulls the tarball into the page
// cache, so untar measures the filesystem under test, not the tarball's.
func prepUntar(e *env) error {
	if err := os.Mkdir(e.tree, 0o755); err != nil {
		return err
	}
	f, err := os.Open(e.src.path)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, f)
	f.Close()
	if err != nil {
		return err
	}
	syscall.Sync()
	return nil
}

func timedLs(e *env) (float64, error) {
	n := 0
	d, err := timeCmd(e.ctx, func(r io.Reader) error {
		// Count regular files: the lines of ls -l that start with '-'.
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if l := sc.Bytes(); len(l) > 0 && l[0] == '-' {
				n++
			}
		}
		return sc.Err()
	}, "ls", "-lR", e.tree)
	e.files = n
	return d, err
}

func checkLs(e *env) error {
	if e.files != e.src.files {
		return fmt.Errorf("ls -lR listed %d regular files, the tarball has %d", e.files, e.src.files)
	}
	return nil
}

func checkRm(e *env) error {
	if _, err := os.Lstat(e.tree); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s still there after rm -rf (%v)", e.tree, err)
	}
	ents, err := os.ReadDir(e.root)
	if err != nil {
		return err
	}
	if len(ents) != 0 {
		return fmt.Errorf("%s not empty after rm -rf: %s ...", e.root, ents[0].Name())
	}
	return nil
}

// timeCmd runs a command as a user would and returns its wall time. With
// out nil its stdout goes to /dev/null; otherwise out consumes it.
func timeCmd(ctx context.Context, out func(io.Reader) error, name string, args ...string) (float64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var pipe io.ReadCloser
	if out != nil {
		var err error
		if pipe, err = cmd.StdoutPipe(); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var outErr error
	if out != nil {
		outErr = out(pipe)
		io.Copy(io.Discard, pipe)
	}
	err := cmd.Wait()
	d := time.Since(t0).Seconds()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	if outErr != nil {
		return 0, fmt.Errorf("%s output: %w", name, outErr)
	}
	return d, nil
}

// dropCaches writes back dirty data and empties the page, dentry and inode
// caches: the next access reads from disk (and, for a FUSE mount, asks the
// daemon again: the kernel forgets the FUSE inodes too).
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// tarball is the source tree archive every round untars.
type tarball struct {
	path  string
	src   string
	files int   // regular files in it that ls -lR lists (not hidden)
	bytes int64 // size of the archive
}

// prepareTarball tars srcDir once into scratch (reused by later runs) and
// counts the regular files in it.
func prepareTarball(ctx context.Context, scratch, srcDir string) (*tarball, error) {
	srcDir, err := filepath.Abs(srcDir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(srcDir); err != nil {
		return nil, fmt.Errorf("source tree: %w", err)
	}
	h := sha256.Sum256([]byte(srcDir))
	t := &tarball{src: srcDir, path: filepath.Join(scratch, "tree-"+hex.EncodeToString(h[:6])+".tar")}
	if _, err := os.Stat(t.path); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "fsbench: creating %s from %s\n", t.path, srcDir)
		tmp := t.path + ".tmp"
		if out, err := exec.CommandContext(ctx, "tar", "-cf", tmp, "-C", filepath.Dir(srcDir), filepath.Base(srcDir)).CombinedOutput(); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("tar %s: %w: %s", srcDir, err, out)
		}
		if err := os.Rename(tmp, t.path); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	st, err := os.Stat(t.path)
	if err != nil {
		return nil, err
	}
	t.bytes = st.Size()
	if err := t.count(); err != nil {
		return nil, err
	}
	if t.files == 0 {
		return nil, fmt.Errorf("%s holds no regular files", t.path)
	}
	return t, nil
}

// count reads the archive's headers: the regular files (and hard links,
// which ls -l shows as regular files) outside hidden directories, since
// ls -lR without -a neither lists dot files nor descends into dot
// directories.
func (t *tarball) count() error {
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", t.path, err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeLink {
			continue
		}
		hidden := false
		for _, c := range strings.Split(strings.TrimPrefix(h.Name, "./"), "/") {
			if strings.HasPrefix(c, ".") {
				hidden = true
			}
		}
		if !hidden {
			t.files++
		}
	}
}

// startPerf attaches perf record to f's daemon and returns what stops it.
// perf needs a moment to attach; that wait is outside the timed part.
func startPerf(ctx context.Context, f *filesystem, key string) (func() error, error) {
	dir := filepath.Join(f.cfg.scratch, "perf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, f.name+"-"+key+".data")
	cmd := exec.Command("perf", "record", "-q", "-F", "1999", "-g", "-o", out, "-p", strconv.Itoa(f.cmd.Process.Pid))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	select {
	case <-time.After(700 * time.Millisecond):
	case <-ctx.Done():
	}
	return func() error {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "interrupt") {
			return fmt.Errorf("perf record: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		fmt.Fprintf(os.Stderr, "fsbench: wrote %s\n", out)
		return nil
	}, nil
}
