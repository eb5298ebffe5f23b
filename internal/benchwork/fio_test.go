package benchwork

import (
	"fmt"
	"strings"
	"testing"
)

// fioJSON is fio 3.33's --group_reporting JSON, cut to the fields read.
func fioJSON(errno int, ios, bytes, syncs int64, iops float64) string {
	return fmt.Sprintf(`{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "rw", "groupid" : 0, "error" : %d,
      "job options" : {"rw" : "randwrite", "bs" : "8192"},
      "read" : {"io_bytes" : 0, "total_ios" : 0, "iops" : 0.0},
      "write" : {"io_bytes" : %d, "io_kbytes" : 171016, "bw_bytes" : 174945438, "iops" : %v, "runtime" : 1001, "total_ios" : %d, "short_ios" : 0},
      "sync" : {"total_ios" : 0, "lat_ns" : {"min" : 42613, "max" : 16575594, "N" : %d}}
    }
  ]
}`, errno, bytes, iops, ios, syncs)
}

func TestParseFio(t *testing.T) {
	good := fioJSON(0, 21377, 21377*8192, 21377, 21355.644356)
	for _, tc := range []struct {
		name, out string
		iops      float64
		err       string // "" for none; else part of the parse or verify error
	}{
		{"clean", good, 21355.644356, ""},
		{"warning first", "fio: this platform does not support process shared mutexes\n" + good, 21355.644356, ""},
		{"last write per job unsynced", fioJSON(0, 100, 100*8192, 96, 50), 50, ""},
		{"job error", fioJSON(5, 100, 100*8192, 100, 50), 0, "job error 5"},
		{"nothing written", fioJSON(0, 0, 0, 0, 0), 0, "wrote nothing"},
		{"short writes", fioJSON(0, 100, 100*4096, 100, 50), 0, "not 8 KiB each"},
		{"syncs missing", fioJSON(0, 100, 100*8192, 10, 50), 0, "fdatasync"},
		{"not JSON", "fio: failed to open\n", 0, "no JSON"},
		{"broken JSON", "{\"jobs\": [", 0, "fio JSON"},
		{"two groups", `{"jobs":[{},{}]}`, 0, "2 job groups"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseFio([]byte(tc.out))
			if err == nil {
				err = r.Verify()
			}
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.IOPS() != tc.iops {
					t.Errorf("iops = %v, want %v", r.IOPS(), tc.iops)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one mentioning %q", err, tc.err)
			}
		})
	}
}

func TestFioArgsAskForTheIssuesWorkload(t *testing.T) {
	got := strings.Join(FioArgs("/m/fio-0", 15), " ")
	for _, want := range []string{"--rw=randwrite", "--bs=8192", "--numjobs=4", "--fdatasync=1", "--runtime=15", "--time_based", "--group_reporting", "--output-format=json", "--directory=/m/fio-0"} {
		if !strings.Contains(got, want) {
			t.Errorf("fio args %q lack %s", got, want)
		}
	}
}
