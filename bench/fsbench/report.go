package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/securevol/securevol/internal/benchwork"
)

// sample is one timed run: the workload's value, its wall time and the
// CPU time the mount daemon spent meanwhile.
type sample struct {
	value float64
	wall  float64
	cpu   float64
	ops   map[string]int // FUSE requests by opcode (-opcounts only)
}

type report struct {
	cfg      config
	wls      []*workload
	src      *tarball
	versions []string
	// loadBefore and loadAfter are /proc/loadavg around the rounds: other
	// work on the machine blurs the numbers (interleaving only spreads it).
	loadBefore, loadAfter string
	samples               map[string]map[string][]sample // filesystem → workload → samples in round order
	errs                  map[string]error
}

func newReport(cfg config, wls []*workload, src *tarball) *report {
	return &report{cfg: cfg, wls: wls, src: src, samples: map[string]map[string][]sample{}, errs: map[string]error{}}
}

func (r *report) add(fs, key string, s sample) {
	if r.samples[fs] == nil {
		r.samples[fs] = map[string][]sample{}
	}
	r.samples[fs][key] = append(r.samples[fs][key], s)
}

func (r *report) setFailed(fs string, err error) {
	if r.errs[fs] == nil {
		r.errs[fs] = err
	}
}

func (r *report) isFailed(fs string) bool { return r.errs[fs] != nil }
func (r *report) failed() bool            { return len(r.errs) > 0 }

// series returns one field of fs's samples on key, in round order.
func (r *report) series(fs, key string, field func(sample) float64) []float64 {
	var xs []float64
	for _, s := range r.samples[fs][key] {
		xs = append(xs, field(s))
	}
	return xs
}

func value(s sample) float64 { return s.value }

// stat summarises fs's values on key over the rounds.
func (r *report) stat(fs, key string) (spread, bool) {
	xs := r.series(fs, key, value)
	return summarize(xs), len(xs) > 0
}

// ratios are fs's value over plain's, round by round (both ran in the
// same round, close in time): speed/plain for rates, time/plain for times.
func (r *report) ratios(fs, key string) []float64 {
	v, p := r.series(fs, key, value), r.series("plain", key, value)
	var xs []float64
	for i := 0; i < len(v) && i < len(p); i++ {
		if p[i] > 0 {
			xs = append(xs, v[i]/p[i])
		}
	}
	return xs
}

// ratio summarises the per-round ratios: their median is the row's
// figure, their range how much it can be trusted.
func (r *report) ratio(fs, key string) (spread, bool) {
	xs := r.ratios(fs, key)
	return summarize(xs), len(xs) > 0
}

// verdict says whether ratio meets w's target.
func verdict(w *workload, ratio float64) string {
	if w.target == 0 {
		return ""
	}
	if w.unit.higherIsBetter() && ratio >= w.target || !w.unit.higherIsBetter() && ratio <= w.target {
		return "PASS"
	}
	return "MISS"
}

func (w *workload) targetText() string {
	switch {
	case w.target == 0:
		return "(info)"
	case w.unit.higherIsBetter():
		return fmt.Sprintf("≥ %.2g", w.target)
	default:
		return fmt.Sprintf("≤ %.2g×", w.target)
	}
}

func (r *report) title(w *workload) string {
	switch w.key {
	case "write", "read":
		return fmt.Sprintf("%s %d MiB", w.title, r.cfg.sizeMiB)
	case "untar":
		return fmt.Sprintf("untar %d files", r.src.files)
	}
	return w.title
}

// number prints a value of unit u without the unit.
func (u unit) number(v float64) string {
	switch {
	case u == seconds && v < 0.1:
		return fmt.Sprintf("%.3f", v)
	case u == seconds:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func (u unit) String() string {
	return [...]string{speedMBps: "MB/s", seconds: "s", iops: "IOPS", tps: "tps"}[u]
}

func formatValue(w *workload, v float64) string { return w.unit.number(v) + " " + w.unit.String() }

// formatCell is a median with its unit and, over several rounds, the
// range: "651 MB/s (640–660)".
func formatCell(w *workload, s spread) string {
	c := formatValue(w, s.med)
	if s.n > 1 {
		c += fmt.Sprintf(" (%s–%s)", w.unit.number(s.min), w.unit.number(s.max))
	}
	return c
}

func formatRatio(w *workload, s spread) string {
	suffix := ""
	if !w.unit.higherIsBetter() {
		suffix = "×"
	}
	c := fmt.Sprintf("%.2f%s", s.med, suffix)
	if s.n > 1 {
		c += fmt.Sprintf(" (%.2f–%.2f)", s.min, s.max)
	}
	return c
}

func formatPercent(x float64) string { return fmt.Sprintf("%.0f %%", 100*x) }

// rowSpread is the largest relative range, (max-min)/median over the
// rounds, of any filesystem's values on key: how noisy the row was.
func (r *report) rowSpread(key string) (float64, bool) {
	worst, ok := 0.0, false
	for _, fs := range r.cfg.filesystems {
		if s, have := r.stat(fs, key); have {
			if rel, has := s.relRange(); has {
				worst, ok = max(worst, rel), true
			}
		}
	}
	return worst, ok
}

// resultTable is the Markdown table the README's performance section is
// pasted from: medians with their ranges, per-round ratios to plain
// (median and range), the target and securevol's verdict, and the row's
// spread.
func (r *report) resultTable() *mdTable {
	fss := r.cfg.filesystems
	t := &mdTable{head: []string{"workload"}, right: []bool{false}}
	for _, fs := range fss {
		t.head, t.right = append(t.head, fs), append(t.right, true)
		if fs != "plain" {
			t.head, t.right = append(t.head, "ratio"), append(t.right, true)
		}
	}
	hasSV := contains(fss, "securevol")
	if hasSV {
		t.head, t.right = append(t.head, "target", "securevol"), append(t.right, false, false)
	}
	t.head, t.right = append(t.head, "spread"), append(t.right, true)
	for _, w := range r.wls {
		row := []string{r.title(w)}
		for _, fs := range fss {
			if s, ok := r.stat(fs, w.key); ok {
				row = append(row, formatCell(w, s))
			} else {
				row = append(row, "n/a")
			}
			if fs == "plain" {
				continue
			}
			if ra, ok := r.ratio(fs, w.key); ok {
				row = append(row, formatRatio(w, ra))
			} else {
				row = append(row, "-")
			}
		}
		if hasSV {
			row = append(row, w.targetText())
			if ra, ok := r.ratio("securevol", w.key); ok {
				row = append(row, verdict(w, ra.med))
			} else if w.target != 0 {
				row = append(row, "n/a")
			} else {
				row = append(row, "")
			}
		}
		if rel, ok := r.rowSpread(w.key); ok {
			row = append(row, formatPercent(rel))
		} else {
			row = append(row, "-")
		}
		t.add(row...)
	}
	return t
}

// cpuTable shows where the time goes in the FUSE daemons: CPU seconds
// they burnt during each timed step (user+system, median) next to the
// step's wall time. Near the wall time means CPU-bound in the daemon; far
// below it means waiting (on the kernel round trips or the disk).
func (r *report) cpuTable() *mdTable {
	t := &mdTable{head: []string{"workload"}, right: []bool{false}}
	var daemons []string
	for _, fs := range r.cfg.filesystems {
		if fs != "plain" {
			daemons = append(daemons, fs)
			t.head, t.right = append(t.head, fs+" cpu", fs+" wall"), append(t.right, true, true)
		}
	}
	if len(daemons) == 0 {
		return nil
	}
	for _, w := range r.wls {
		row := []string{r.title(w)}
		for _, fs := range daemons {
			if len(r.samples[fs][w.key]) == 0 {
				row = append(row, "n/a", "n/a")
				continue
			}
			cpu := median(r.series(fs, w.key, func(s sample) float64 { return s.cpu }))
			wall := median(r.series(fs, w.key, func(s sample) float64 { return s.wall }))
			row = append(row, fmt.Sprintf("%.2f s", cpu), fmt.Sprintf("%.2f s", wall))
		}
		t.add(row...)
	}
	return t
}

// noise sums up how much the rounds disagreed across all rows.
func (r *report) noise() string {
	var rels []float64
	worst, worstRow := 0.0, ""
	for _, w := range r.wls {
		if rel, ok := r.rowSpread(w.key); ok {
			rels = append(rels, rel)
			if rel >= worst {
				worst, worstRow = rel, r.title(w)
			}
		}
	}
	if len(rels) == 0 {
		return "one round: no spread to show (use -rounds 3 or more)"
	}
	return fmt.Sprintf("rows' spread (max-min)/median over rounds: median %s, worst %s (%s)", formatPercent(median(rels)), formatPercent(worst), worstRow)
}

func (r *report) print(out io.Writer) {
	fss := r.cfg.filesystems
	fmt.Fprintf(out, "\nfsbench: %d round(s), filesystems interleaved per round; %d CPUs\n", r.cfg.rounds, runtime.NumCPU())
	for _, v := range r.versions {
		fmt.Fprintf(out, "  %s\n", v)
	}
	if r.loadBefore != "" {
		fmt.Fprintf(out, "  load average (1/5/15 min): %s before, %s after the rounds\n", r.loadBefore, r.loadAfter)
	}
	fmt.Fprintf(out, "  noise: %s\n", r.noise())
	if r.src != nil {
		fmt.Fprintf(out, "  tree: %s (%d regular files, tarball %.0f MiB)\n", r.src.src, r.src.files, float64(r.src.bytes)/(1<<20))
	}
	if r.cfg.otherUsers && contains(fss, "gocryptfs") {
		fmt.Fprintln(out, "  gocryptfs mounted with -allow_other (PostgreSQL runs as the postgres user)")
	}
	fmt.Fprintf(out, "\nCells: median (min–max over rounds). Ratios: per round to plain, then median (min–max);\n"+
		"speed/plain for rates, time/plain for times. Spread: the row's largest (max-min)/median.\n\n")
	fmt.Fprint(out, r.resultTable())

	if t := r.cpuTable(); t != nil {
		fmt.Fprintln(out, "\nmount daemon CPU (user+sys) vs. wall time of each step, medians:")
		fmt.Fprintln(out)
		fmt.Fprint(out, t)
	}

	r.printOps(out)

	fmt.Fprintln(out, "\nall samples (in round order):")
	for _, w := range r.wls {
		for _, fs := range fss {
			var vs []string
			for _, s := range r.samples[fs][w.key] {
				vs = append(vs, formatValue(w, s.value))
			}
			if len(vs) > 0 {
				fmt.Fprintf(out, "  %-42s %-10s %s\n", r.title(w), fs, strings.Join(vs, ", "))
			}
		}
	}
	fmt.Fprintf(out, `
method: write = %[1]d x 1 MiB write(2) from Go, then fsync and close, timed from open
to close; read = sync + drop_caches, then 1 MiB read(2)s (first/last 4 KiB of each
MiB checked); untar = tar -xf of a page-cached tarball (tar's exit, dirty data may
remain; "sync after untar" then times sync(2)); ls -lR cold = after sync +
drop_caches (which also makes the kernel forget FUSE inodes), output counted and
checked; ls -lR warm = the same again right after; rm -rf right after the warm ls.
randwrite = fio, 4 jobs (one 64 MiB file each), 8 KiB random writes, fdatasync after
each, psync, %[2]v; its IOPS; files read back after drop_caches. SQLite = sqlite3 shell,
pgbench's tables at scale %[3]d loaded in one transaction (load = wall time), then
TPC-B-like transactions (3 updates, 1 insert) one at a time, WAL, synchronous=FULL,
for %[2]v; checked: integrity, history rows and balance sums. pgbench = Debian's
PostgreSQL (fsync on), data directory on the filesystem, unix socket; load = pgbench
-i -s %[4]d; then pgbench -c 4 -j 2 -T %[2]v, tps without connection time; checked:
no failures, history rows = processed, balance sums agree.
`, r.cfg.sizeMiB, r.cfg.dbDuration, benchwork.SQLiteScale, pgScale)
	for _, fs := range fss {
		if err := r.errs[fs]; err != nil {
			fmt.Fprintf(out, "\n%s: NOT MEASURED (fully): %v\n", fs, err)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// printOps lists, per filesystem and workload, the FUSE requests of the
// first round, most frequent first.
func (r *report) printOps(out io.Writer) {
	if !r.cfg.opcounts {
		return
	}
	fmt.Fprintln(out, "\nFUSE requests per step (first round; -opcounts: timings above include debug logging):")
	for _, fs := range r.cfg.filesystems {
		for _, w := range r.wls {
			ss := r.samples[fs][w.key]
			if len(ss) == 0 || ss[0].ops == nil {
				continue
			}
			type kv struct {
				op string
				n  int
			}
			var kvs []kv
			total := 0
			for op, n := range ss[0].ops {
				kvs = append(kvs, kv{op, n})
				total += n
			}
			sort.Slice(kvs, func(i, j int) bool { return kvs[i].n > kvs[j].n || kvs[i].n == kvs[j].n && kvs[i].op < kvs[j].op })
			var parts []string
			for _, e := range kvs {
				parts = append(parts, fmt.Sprintf("%s %d", e.op, e.n))
			}
			fmt.Fprintf(out, "  %-10s %-26s %7d: %s\n", fs, r.title(w), total, strings.Join(parts, ", "))
		}
	}
}
