package benchwork

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The randwrite workload: what a database's data files see. fio's jobs
// each write 8 KiB blocks at random offsets of their own file and
// fdatasync after every write.
const (
	FioJobs     = 4
	FioBlock    = 8 << 10
	FioFileSize = 64 << 20
)

// FioArgs are fio's arguments for the randwrite workload in dir, timed for
// seconds after the files are laid out. Job j's file is dir/rw.j.0.
func FioArgs(dir string, seconds int) []string {
	return []string{
		"--name=rw", "--directory=" + dir, "--rw=randwrite",
		"--bs=" + strconv.Itoa(FioBlock), "--numjobs=" + strconv.Itoa(FioJobs),
		"--size=" + strconv.Itoa(FioFileSize), "--fdatasync=1", "--ioengine=psync",
		"--runtime=" + strconv.Itoa(seconds), "--time_based", "--group_reporting",
		"--output-format=json",
	}
}

// FioResult is the part of fio's JSON output (--group_reporting: one job
// entry for all) the randwrite rows read and check.
type FioResult struct {
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

// ParseFio reads fio's --output-format=json output. fio may print
// warnings ahead of the JSON object on the same stream.
func ParseFio(out []byte) (*FioResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return nil, fmt.Errorf("no JSON in fio output: %q", truncate(string(out), 200))
	}
	var r FioResult
	if err := json.Unmarshal(out[i:], &r); err != nil {
		return nil, fmt.Errorf("fio JSON: %w", err)
	}
	if len(r.Jobs) != 1 {
		return nil, fmt.Errorf("fio reported %d job groups, want 1 (--group_reporting)", len(r.Jobs))
	}
	return &r, nil
}

// Verify checks that fio did what FioArgs asked: no error, whole 8 KiB
// writes, and an fdatasync after each (a job's last write may go unsynced
// when the time runs out).
func (r *FioResult) Verify() error {
	j := r.Jobs[0]
	w := j.Write
	switch {
	case j.Error != 0:
		return fmt.Errorf("fio job error %d", j.Error)
	case w.TotalIOs == 0 || w.IOPS <= 0:
		return errors.New("fio wrote nothing")
	case w.IOBytes != w.TotalIOs*FioBlock:
		return fmt.Errorf("fio wrote %d bytes in %d writes, not %d KiB each", w.IOBytes, w.TotalIOs, FioBlock>>10)
	case j.Sync.Lat.N < w.TotalIOs-FioJobs:
		return fmt.Errorf("fio made %d fdatasync calls for %d writes", j.Sync.Lat.N, w.TotalIOs)
	}
	return nil
}

// IOPS is the timed random writes' rate (fio's layout is not counted).
func (r *FioResult) IOPS() float64 { return r.Jobs[0].Write.IOPS }

// truncate shortens s to n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
