package main

import (
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
)

// report prints one table per measure: a row per step, a column per
// server, each cell the median over rounds and its min–max.
func report(c config, res map[key][]sample) {
	fmt.Printf("FUSE transports, %d rounds, median [min–max]\n", c.rounds)
	measures := []struct {
		name  string
		get   func(sample) float64
		reads bool
	}{
		{"µs per call (mean, per thread)", func(s sample) float64 { return s.usPerOp }, false},
		{"µs p99 per call", func(s sample) float64 { return s.p99 }, false},
		{"µs CPU per call (client + server)", func(s sample) float64 { return s.cpuPerOp }, false},
		{"MB/s", func(s sample) float64 { return s.mbps }, true},
	}
	for _, m := range measures {
		fmt.Printf("\n%s\n", m.name)
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(w, "step\t")
		for _, s := range c.servers {
			fmt.Fprintf(w, "%s\t", s)
		}
		fmt.Fprintln(w)
		for _, step := range steps {
			if m.reads && step[0] != 'p' {
				continue
			}
			fmt.Fprintf(w, "%s\t", step)
			for _, s := range c.servers {
				fmt.Fprintf(w, "%s\t", cell(res[key{s, step}], m.get))
			}
			fmt.Fprintln(w)
		}
		_ = w.Flush()
	}
}

func cell(xs []sample, get func(sample) float64) string {
	if len(xs) == 0 {
		return "-"
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = get(x)
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return fmt.Sprintf("%.1f [%.1f–%.1f]", med, v[0], v[len(v)-1])
}
