package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/securevol/securevol/internal/benchwork"
)

// The randwrite row: benchwork's fio workload in the filesystem.

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

// timedFio runs fio and returns its write IOPS. fio lays its files out
// first; its IOPS count only the timed random writes.
func timedFio(e *env) (float64, error) {
	cmd := exec.CommandContext(e.ctx, "fio", benchwork.FioArgs(fioDir(e), max(1, int(e.duration.Seconds())))...)
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
	if e.fio, err = benchwork.ParseFio(out); err != nil {
		return 0, err
	}
	return e.fio.IOPS(), nil
}

// checkFio verifies fio's own numbers and then the files: each at its full
// size, and readable end to end (through decryption, on the encrypted
// filesystems) after the page cache is dropped.
func checkFio(e *env) error {
	if err := e.fio.Verify(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	for j := 0; j < benchwork.FioJobs; j++ {
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
		if n != benchwork.FioFileSize {
			return fmt.Errorf("%s holds %d bytes, fio wrote %d", name, n, benchwork.FioFileSize)
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
