package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The randwrite row: what a database's data files see. fio's jobs each
// write 8 KiB blocks at random offsets of their own file and fdatasync
// after every write.
const (
	fioJobs     = 4
	fioBlock    = 8 << 10
	fioFileSize = 64 << 20
)

// fioResult is the part of fio's JSON output (--group_reporting: one job
// entry for all) the row reads and checks.
type fioResult struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Write struct {
			IOBytes  int64   `json:"io_bytes"`
			TotalIOs int64   `json:"total_ios"`
			IOPS     float64 `json:"iops"`
			Runtime  int64   `json:"runtime"` // ms
		} `json:"write"`
		// fio counts fdatasync calls in sync.lat_ns.N (total_ios stays 0
		// with ioengine=psync).
		Sync struct {
			Lat struct {
				N int64 `json:"N"`
			} `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

// parseFio reads fio's --output-format=json output. fio may print
// warnings ahead of the JSON object on the same stream.
func parseFio(out []byte) (*fioResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return nil, fmt.Errorf("no JSON in fio output: %q", truncate(string(out), 200))
	}
	var r fioResult
	if err := json.Unmarshal(out[i:], &r); err != nil {
		return nil, fmt.Errorf("fio JSON: %w", err)
	}
	if len(r.Jobs) != 1 {
		return nil, fmt.Errorf("fio reported %d job groups, want 1 (--group_reporting)", len(r.Jobs))
	}
	return &r, nil
}

// verify checks that fio did what was asked: no error, whole 8 KiB writes,
// and an fdatasync after each (a job's last write may go unsynced when
// the time runs out).
func (r *fioResult) verify() error {
	j := r.Jobs[0]
	w := j.Write
	switch {
	case j.Error != 0:
		return fmt.Errorf("fio job error %d", j.Error)
	case w.TotalIOs == 0 || w.IOPS <= 0:
		return errors.New("fio wrote nothing")
	case w.IOBytes != w.TotalIOs*fioBlock:
		return fmt.Errorf("fio wrote %d bytes in %d writes, not %d KiB each", w.IOBytes, w.TotalIOs, fioBlock>>10)
	case j.Sync.Lat.N < w.TotalIOs-fioJobs:
		return fmt.Errorf("fio made %d fdatasync calls for %d writes", j.Sync.Lat.N, w.TotalIOs)
	}
	return nil
}

func (r *fioResult) iops() float64 { return r.Jobs[0].Write.IOPS }

func fioDir(e *env) string { return filepath.Join(e.root, fmt.Sprintf("fio-%d", e.round)) }

func prepFio(e *env) error {
	dir := fioDir(e)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, func() { os.RemoveAll(dir) })
	syscall.Sync()
	return nil
}

func fioArgs(dir string, d int) []string {
	return []string{
		"--name=rw", "--directory=" + dir, "--rw=randwrite",
		"--bs=" + strconv.Itoa(fioBlock), "--numjobs=" + strconv.Itoa(fioJobs),
		"--size=" + strconv.Itoa(fioFileSize), "--fdatasync=1", "--ioengine=psync",
		"--runtime=" + strconv.Itoa(d), "--time_based", "--group_reporting",
		"--output-format=json",
	}
}

// timedFio runs fio and returns its write IOPS. fio lays its files out
// first; its IOPS count only the timed random writes.
func timedFio(e *env) (float64, error) {
	cmd := exec.CommandContext(e.ctx, "fio", fioArgs(fioDir(e), max(1, int(e.duration.Seconds())))...)
	cmd.Dir = fioDir(e)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if e.ctx.Err() != nil {
		return 0, e.ctx.Err()
	}
	if err != nil {
		return 0, fmt.Errorf("fio: %w: %s", err, truncate(strings.TrimSpace(stderr.String()), 500))
	}
	if e.fio, err = parseFio(out); err != nil {
		return 0, err
	}
	return e.fio.iops(), nil
}

// checkFio verifies fio's own numbers and then the files: each at its full
// size, and readable end to end (through decryption, on the encrypted
// filesystems) after the page cache is dropped.
func checkFio(e *env) error {
	if err := e.fio.verify(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	for j := 0; j < fioJobs; j++ {
		name := filepath.Join(fioDir(e), fmt.Sprintf("rw.%d.0", j))
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read back %s: %w", name, err)
		}
		if n != fioFileSize {
			return fmt.Errorf("%s holds %d bytes, fio wrote %d", name, n, fioFileSize)
		}
	}
	return os.RemoveAll(fioDir(e))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
