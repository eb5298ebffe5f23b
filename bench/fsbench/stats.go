package main

import (
	"sort"
	"strings"
	"unicode/utf8"
)

// spread summarises the samples of one row over the rounds: the median
// is what the table ranks by, min and max show how far the rounds strayed.
type spread struct {
	med, min, max float64
	n             int
}

func summarize(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return spread{med: median(s), min: s[0], max: s[len(s)-1], n: len(s)}
}

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

// relRange is (max-min)/median: 0.1 means the rounds spanned 10 % of the
// median. One round has no spread to show.
func (s spread) relRange() (float64, bool) {
	if s.n < 2 || s.med == 0 {
		return 0, false
	}
	return (s.max - s.min) / s.med, true
}

// mdTable is a Markdown table whose columns are padded, so it reads in a
// terminal and pastes into the README as it is.
type mdTable struct {
	head  []string
	right []bool // right-align column i (numbers)
	rows  [][]string
}

func (t *mdTable) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *mdTable) String() string {
	width := make([]int, len(t.head))
	for _, row := range append([][]string{t.head}, t.rows...) {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c), 3)
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i < len(t.right) && t.right[i] {
				c = pad + c
			} else {
				c += pad
			}
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	line(t.head)
	b.WriteString("|")
	for i, w := range width {
		if i < len(t.right) && t.right[i] {
			b.WriteString(strings.Repeat("-", w+1) + ":|")
		} else {
			b.WriteString(strings.Repeat("-", w+2) + "|")
		}
	}
	b.WriteString("\n")
	for _, row := range t.rows {
		line(row)
	}
	return b.String()
}
