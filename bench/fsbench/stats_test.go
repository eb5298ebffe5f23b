package main

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in        []float64
		want      spread
		rel       float64
		hasSpread bool
	}{
		{nil, spread{}, 0, false},
		{[]float64{7}, spread{7, 7, 7, 1}, 0, false},
		{[]float64{5, 1, 3}, spread{3, 1, 5, 3}, 4.0 / 3, true},
		{[]float64{4, 1, 3, 2}, spread{2.5, 1, 4, 4}, 1.2, true},
		{[]float64{2, 2}, spread{2, 2, 2, 2}, 0, true},
	} {
		got := summarize(tc.in)
		if got != tc.want {
			t.Errorf("summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
		rel, ok := got.relRange()
		if ok != tc.hasSpread || rel != tc.rel {
			t.Errorf("relRange(%v) = %v, %v; want %v, %v", tc.in, rel, ok, tc.rel, tc.hasSpread)
		}
	}
	in := []float64{3, 1, 2}
	summarize(in)
	if in[0] != 3 || in[1] != 1 {
		t.Errorf("summarize reordered its input: %v", in)
	}
}

func TestCellsShowRangeOnlyOverRounds(t *testing.T) {
	speed := &workload{unit: speedMBps}
	tm := &workload{unit: seconds}
	for _, tc := range []struct {
		got, want string
	}{
		{formatCell(speed, spread{651, 640, 660.4, 3}), "651 MB/s (640–660)"},
		{formatCell(speed, spread{651, 651, 651, 1}), "651 MB/s"},
		{formatCell(tm, spread{0.92, 0.05, 1.5, 2}), "0.92 s (0.050–1.50)"},
		{formatCell(&workload{unit: tps}, spread{85.26, 80, 90, 3}), "85.3 tps (80.0–90.0)"},
		{formatRatio(speed, spread{0.641, 0.6, 0.7, 3}), "0.64 (0.60–0.70)"},
		{formatRatio(tm, spread{6.6, 6.6, 6.6, 1}), "6.60×"},
		{(&workload{unit: iops, target: 0.8}).targetText(), "≥ 0.8"},
		{(&workload{unit: seconds, target: 3}).targetText(), "≤ 3×"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestMarkdownTablePadsByRunes(t *testing.T) {
	tb := &mdTable{head: []string{"workload", "ratio"}, right: []bool{false, true}}
	tb.add("untar", "6.6×")
	tb.add("read", "0.99 (0.90–1.00)")
	want := `| workload |            ratio |
|----------|-----------------:|
| untar    |             6.6× |
| read     | 0.99 (0.90–1.00) |
`
	if got := tb.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestResultTableHasRatioRangesAndSpread(t *testing.T) {
	wls, err := selectWorkloads(map[string]bool{"rm": true})
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(config{filesystems: []string{"plain", "securevol"}}, wls, &tarball{files: 10})
	for i, v := range []float64{1, 2, 1} {
		r.add("plain", "untar", sample{value: v})
		r.add("securevol", "untar", sample{value: []float64{3, 8, 2}[i]})
		r.add("plain", "rm", sample{value: 1})
		r.add("securevol", "rm", sample{value: 1.5})
	}
	got := r.resultTable().String()
	for _, want := range []string{
		"| untar 10 files |", "1.00 s (1.00–2.00)", "3.00× (2.00–4.00)", "≤ 3× ", "PASS", "200 %",
		"| rm -rf ", "1.50× ", "0 %",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 4 {
		t.Errorf("table has %d lines, want header, rule and 2 rows:\n%s", n, got)
	}
}
