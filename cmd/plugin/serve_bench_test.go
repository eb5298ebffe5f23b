package main

import (
	"github.com/securevol/securevol/internal/testenv"

	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmRSS reads a process's resident set size in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// BenchmarkServeRSS100Mounted reports the resident memory of a real
// `securevol serve` with 100 volumes mounted, each having been written and
// read through (target: under 150 MB).
func BenchmarkServeRSS100Mounted(b *testing.B) {
	testenv.RequireFUSE(b)
	d := newServeProc(b, buildServeBinary(b))
	d.extra = []string{"--log-level", "info"}
	d.start()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for i := range 100 {
		name := fmt.Sprintf("rss-%03d", i)
		d.must("/VolumeDriver.Create", map[string]any{"Name": name}, nil)
		mp := d.mount(name, "c")
		writeSynced(b, filepath.Join(mp, "blob"), data)
		if got, err := os.ReadFile(filepath.Join(mp, "blob")); err != nil || !bytes.Equal(got, data) {
			b.Fatalf("%s: read back %d bytes, %v", name, len(got), err)
		}
	}
	var rss int64
	for b.Loop() {
		var err error
		if rss, err = vmRSS(d.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rss)/(1<<20), "MiB-RSS")
	if rss > 150<<20 {
		b.Errorf("serve uses %d MiB with 100 mounted volumes; the target is under 150 MB", rss>>20)
	}

	// Crash and restart: time to listening again with 100 stale mounts to
	// clear and 100 volumes to mount again (the engine allows ~9 s).
	d.kill()
	start := time.Now()
	d.start()
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-restart")
	if got, err := os.ReadFile(filepath.Join(d.mountRoot, "rss-099", "blob")); err != nil || !bytes.Equal(got, data) {
		b.Fatalf("after restart: %d bytes, %v", len(got), err)
	}
	d.stop()
}
