package main

import (
	"strings"
	"testing"
)

// pgbench15 is what pgbench 15 prints after a run.
const pgbench15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
starting vacuum...end.
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 5
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 4580
number of failed transactions: 0 (0.000%)
latency average = 2.619 ms
initial connection time = 18.122 ms
tps = 1527.037737 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      pgbenchResult
		err       string
	}{
		{"pgbench 15", pgbench15, pgbenchResult{processed: 4580, tps: 1527.037737}, ""},
		{"failures", strings.Replace(pgbench15, "failed transactions: 0 ", "failed transactions: 7 ", 1), pgbenchResult{processed: 4580, failed: 7, tps: 1527.037737}, ""},
		{"older pgbench without failures line", strings.Replace(pgbench15, "number of failed transactions: 0 (0.000%)\n", "", 1), pgbenchResult{processed: 4580, tps: 1527.037737}, ""},
		{"no tps", strings.Replace(pgbench15, "tps = ", "tpx = ", 1), pgbenchResult{}, "without transaction count or tps"},
		{"nothing processed", strings.Replace(pgbench15, "processed: 4580", "processed: 0", 1), pgbenchResult{}, "processed 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePgbench(tc.out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parsePgbench = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestPgVersionPicksNewest(t *testing.T) {
	if pgVersion("/usr/lib/postgresql/15/bin") != 15 || pgVersion("/usr/lib/postgresql/9/bin") != 9 {
		t.Error("pgVersion does not read the major version from the path")
	}
}
