package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
)

// sample is one timed run: the workload's value and the CPU time the mount
// daemon spent meanwhile.
type sample struct {
	value float64
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
	samples               map[string]map[string][]sample // filesystem → workload → samples
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

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// stat returns the median value and median daemon CPU of fs on key.
func (r *report) stat(fs, key string) (value, cpu float64, ok bool) {
	ss := r.samples[fs][key]
	if len(ss) == 0 {
		return 0, 0, false
	}
	var v, c []float64
	for _, s := range ss {
		v = append(v, s.value)
		c = append(c, s.cpu)
	}
	return median(v), median(c), true
}

// ratio is the filesystem's median over plain's: speed/plain for speeds,
// time/plain for times.
func (r *report) ratio(fs, key string) (float64, bool) {
	v, _, ok := r.stat(fs, key)
	p, _, okp := r.stat("plain", key)
	if !ok || !okp || p == 0 {
		return 0, false
	}
	return v / p, true
}

// verdict says whether ratio meets w's target.
func verdict(w *workload, ratio float64) string {
	if w.target == 0 {
		return ""
	}
	if w.unit == speedMBps && ratio >= w.target || w.unit == seconds && ratio <= w.target {
		return "PASS"
	}
	return "MISS"
}

func (w *workload) targetText() string {
	switch {
	case w.target == 0:
		return "-"
	case w.unit == speedMBps:
		return fmt.Sprintf(">= %.2f", w.target)
	default:
		return fmt.Sprintf("<= %.1fx", w.target)
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

func formatValue(w *workload, v float64) string {
	if w.unit == speedMBps {
		return fmt.Sprintf("%.0f MB/s", v)
	}
	return fmt.Sprintf("%.3f s", v)
}

func formatRatio(w *workload, ratio float64) string {
	if w.unit == speedMBps {
		return fmt.Sprintf("%.2f", ratio)
	}
	return fmt.Sprintf("%.2fx", ratio)
}

func (r *report) print(out io.Writer) {
	fss := r.cfg.filesystems
	fmt.Fprintf(out, "\nfsbench: %d round(s), filesystems interleaved per round, medians shown; %d CPUs\n", r.cfg.rounds, runtime.NumCPU())
	for _, v := range r.versions {
		fmt.Fprintf(out, "  %s\n", v)
	}
	if r.loadBefore != "" {
		fmt.Fprintf(out, "  load average (1/5/15 min): %s before, %s after the rounds\n", r.loadBefore, r.loadAfter)
	}
	if r.src != nil {
		fmt.Fprintf(out, "  tree: %s (%d regular files, tarball %.0f MiB)\n", r.src.src, r.src.files, float64(r.src.bytes)/(1<<20))
	}
	fmt.Fprintln(out)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "workload\t"
	for _, fs := range fss {
		head += fs + "\t"
		if fs != "plain" {
			head += "ratio\t"
		}
	}
	hasSV := contains(fss, "securevol")
	if hasSV {
		head += "target\tsecurevol\t"
	}
	fmt.Fprintln(tw, head)
	for _, w := range r.wls {
		line := r.title(w) + "\t"
		for _, fs := range fss {
			v, _, ok := r.stat(fs, w.key)
			if ok {
				line += formatValue(w, v) + "\t"
			} else {
				line += "n/a\t"
			}
			if fs == "plain" {
				continue
			}
			if ra, ok := r.ratio(fs, w.key); ok {
				line += formatRatio(w, ra) + "\t"
			} else {
				line += "-\t"
			}
		}
		if hasSV {
			line += w.targetText() + "\t"
			if ra, ok := r.ratio("securevol", w.key); ok {
				line += verdict(w, ra) + "\t"
			} else if w.target != 0 {
				line += "n/a\t"
			} else {
				line += "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()

	// Where the time goes in the FUSE daemons: CPU seconds they burnt
	// during each timed step (user+system, median). Near the wall time
	// means CPU-bound in the daemon; far below it means waiting (on the
	// kernel round trips or the disk).
	var daemons []string
	for _, fs := range fss {
		if fs != "plain" {
			daemons = append(daemons, fs)
		}
	}
	if len(daemons) > 0 {
		fmt.Fprintln(out, "\nmount daemon CPU (user+sys, median per step) vs. wall time:")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := "workload\t"
		for _, fs := range daemons {
			head += fs + " cpu\t" + fs + " wall\t"
		}
		fmt.Fprintln(tw, head)
		for _, w := range r.wls {
			line := r.title(w) + "\t"
			for _, fs := range daemons {
				v, c, ok := r.stat(fs, w.key)
				if !ok {
					line += "n/a\tn/a\t"
					continue
				}
				wall := v
				if w.unit == speedMBps {
					wall = float64(r.cfg.sizeMiB) * chunkSize / 1e6 / v
				}
				line += fmt.Sprintf("%.2f s\t%.2f s\t", c, wall)
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()
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
				fmt.Fprintf(out, "  %-28s %-10s %s\n", r.title(w), fs, strings.Join(vs, ", "))
			}
		}
	}
	fmt.Fprintf(out, `
method: write = %d x 1 MiB write(2) from Go, then fsync and close, timed from open
to close; read = sync + drop_caches, then 1 MiB read(2)s (first/last 4 KiB of each
MiB checked); untar = tar -xf of a page-cached tarball (tar's exit, dirty data may
remain; "sync after untar" then times sync(2)); ls -lR cold = after sync +
drop_caches (which also makes the kernel forget FUSE inodes), output counted and
checked; ls -lR warm = the same again right after; rm -rf right after the warm ls.
Ratios: speed/plain for MB/s, time/plain for times.
`, r.cfg.sizeMiB)
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
