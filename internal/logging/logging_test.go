package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// Each level lands on its stream, below the chosen level nothing does,
// and every line is whole.
func TestLevelsSplit(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var out, errw bytes.Buffer
		log, err := New(Options{Level: "debug", Format: format, Out: &out, Err: &errw})
		if err != nil {
			t.Fatal(err)
		}
		log = log.WithField(FieldVolume, "v1")
		log.Debug("d-line")
		log.Info("i-line")
		log.Warn("w-line")
		log.Error("e-line")
		for _, tc := range []struct {
			buf       *bytes.Buffer
			want, not []string
		}{
			{&out, []string{"d-line", "i-line"}, []string{"w-line", "e-line"}},
			{&errw, []string{"w-line", "e-line"}, []string{"d-line", "i-line"}},
		} {
			s := tc.buf.String()
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("%s: %q missing from %q", format, w, s)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(s, n) {
					t.Errorf("%s: %q on the wrong stream: %q", format, n, s)
				}
			}
			lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
			if len(lines) != 2 {
				t.Errorf("%s: %d lines, want 2: %q", format, len(lines), s)
			}
			for _, l := range lines {
				if format == "json" && !json.Valid([]byte(l)) {
					t.Errorf("not JSON: %q", l)
				}
				if !strings.Contains(l, "volume") || !strings.Contains(l, "v1") {
					t.Errorf("field lost: %q", l)
				}
			}
		}
	}

	var out, errw bytes.Buffer
	log, _ := New(Options{Level: "warn", Out: &out, Err: &errw})
	log.Info("quiet")
	log.Warn("loud")
	if out.Len() != 0 || !strings.Contains(errw.String(), "level=warning") {
		t.Fatalf("level warn: out %q err %q", out.String(), errw.String())
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := New(Options{Level: "loud"}); !errors.Is(err, ErrLevel) {
		t.Errorf("level loud: %v", err)
	}
	if _, err := New(Options{Format: "xml"}); !errors.Is(err, ErrFormat) {
		t.Errorf("format xml: %v", err)
	}
}

// Under journald every line starts with its syslog priority, so the
// journal keeps the levels that the two streams alone do not.
func TestJournalPriorities(t *testing.T) {
	var out, errs strings.Builder
	log, err := New(Options{Level: "debug", Out: &out, Err: &errs, Journal: true})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	for _, c := range []struct {
		got, want string
	}{
		{out.String(), "<7>"}, {out.String(), "<6>"}, {errs.String(), "<4>"}, {errs.String(), "<3>"},
	} {
		if !strings.Contains(c.got, "\n"+c.want) && !strings.HasPrefix(c.got, c.want) {
			t.Errorf("no line starting with %s in %q", c.want, c.got)
		}
	}
	plain, _ := New(Options{Out: &out, Err: &errs})
	out.Reset()
	plain.Info("x")
	if strings.HasPrefix(out.String(), "<") {
		t.Errorf("a priority prefix without the journal: %q", out.String())
	}
}
