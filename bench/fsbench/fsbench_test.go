package main

import (
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 1, 1}, 1},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestVerdict(t *testing.T) {
	speed := &workload{unit: speedMBps, target: 0.85}
	time := &workload{unit: seconds, target: 3}
	info := &workload{unit: seconds}
	for _, tc := range []struct {
		w     *workload
		ratio float64
		want  string
	}{
		{speed, 0.9, "PASS"},
		{speed, 0.85, "PASS"},
		{speed, 0.84, "MISS"},
		{time, 2.9, "PASS"},
		{time, 3, "PASS"},
		{time, 3.1, "MISS"},
		{info, 100, ""},
	} {
		if got := verdict(tc.w, tc.ratio); got != tc.want {
			t.Errorf("verdict(unit %d target %v, %v) = %q, want %q", tc.w.unit, tc.w.target, tc.ratio, got, tc.want)
		}
	}
}

func TestRatioIsMedianOfPerRoundRatios(t *testing.T) {
	r := newReport(config{}, allWorkloads, &tarball{})
	// Round 2 was slow for both (noise); per-round ratios are 3, 2 and 4.
	for _, v := range []float64{1, 100, 2} {
		r.add("plain", "untar", sample{value: v})
	}
	for _, v := range []float64{3, 200, 8} {
		r.add("securevol", "untar", sample{value: v})
	}
	got, ok := r.ratio("securevol", "untar")
	if !ok || got.med != 3 || got.min != 2 || got.max != 4 || got.n != 3 {
		t.Errorf("ratio = %+v, %v; want median 3, range 2–4 over 3 rounds", got, ok)
	}
	if _, ok := r.ratio("gocryptfs", "untar"); ok {
		t.Error("ratio of an unmeasured filesystem reported as known")
	}
	// A filesystem that failed after one round pairs only that round.
	r.add("gocryptfs", "untar", sample{value: 5})
	if got, ok := r.ratio("gocryptfs", "untar"); !ok || got.n != 1 || got.med != 5 {
		t.Errorf("ratio after one round = %+v, %v; want 5 from one round", got, ok)
	}
}

func TestSelectWorkloadsAddsDependencies(t *testing.T) {
	for _, tc := range []struct {
		chosen []string
		want   string
	}{
		{[]string{"read"}, "write,read"},
		{[]string{"rm"}, "untar,rm"},
		{[]string{"lswarm", "write"}, "write,untar,lswarm"},
		{[]string{"pgbench", "sqlite"}, "sqliteload,sqlite,pgload,pgbench"},
	} {
		m := map[string]bool{}
		for _, k := range tc.chosen {
			m[k] = true
		}
		wls, err := selectWorkloads(m)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, w := range wls {
			keys = append(keys, w.key)
		}
		if got := strings.Join(keys, ","); got != tc.want {
			t.Errorf("selectWorkloads(%v) = %s, want %s", tc.chosen, got, tc.want)
		}
	}
	if _, err := selectWorkloads(map[string]bool{"nope": true}); err == nil {
		t.Error("unknown workload accepted")
	}
}

func TestParseOps(t *testing.T) {
	log := `time="x" level=debug msg="rx 18: LOOKUP n1  \"a\"  p4211" dir=c
time="x" level=debug msg="tx 18:     OK, {n2 g1}" dir=c
2026/11/27 04:00:27 rx 20: READDIRPLUS n2 {Fh 3 [0 +4096)  L 0 LARGEFILE} p4211
2026/11/27 04:00:27 rx 22: LOOKUP n1 ["b"] p1
mounted; rx without a number: NOPE
`
	got := parseOps([]byte(log))
	want := map[string]int{"LOOKUP": 2, "READDIRPLUS": 1}
	if len(got) != len(want) {
		t.Fatalf("parseOps = %v, want %v", got, want)
	}
	for op, n := range want {
		if got[op] != n {
			t.Errorf("parseOps[%s] = %d, want %d (all: %v)", op, got[op], n, got)
		}
	}
}
