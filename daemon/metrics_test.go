package daemon

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/securevol/securevol/internal/testenv"
)

// The daemon serves its metrics on the state dir's socket and writes the
// textfile: after a write through a mount with a size limit, the volume's
// written bytes, used bytes and limit show in both.
func TestDaemonMetrics(t *testing.T) {
	testenv.RequireFUSE(t)
	cfg := testConfig(t)
	cfg.Version = "v-test"
	cfg.MetricsTextfile = filepath.Join(t.TempDir(), "securevol.prom")
	cfg.MetricsInterval = 20 * time.Millisecond
	d := startDaemon(t, cfg)
	sock := filepath.Join(cfg.StateDir, metricsSocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("metrics socket: %v %v", fi, err)
	}
	d.must("/VolumeDriver.Create", map[string]any{"Name": "mv", "Opts": map[string]string{"size": "8M"}})
	d.must("/VolumeDriver.Mount", map[string]string{"Name": "mv", "ID": "c1"})
	data := make([]byte, 1<<20)
	if err := os.WriteFile(filepath.Join(cfg.MountRoot, "mv", "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	fams := scrapeUnix(t, sock)
	want := map[string]func(float64) bool{
		"securevol_written_bytes_total": func(v float64) bool { return v >= float64(len(data)) },
		"securevol_used_bytes":          func(v float64) bool { return v > float64(len(data)) },
		"securevol_size_limit_bytes":    func(v float64) bool { return v == 8<<20 },
		"securevol_volume_mounted":      func(v float64) bool { return v == 1 },
	}
	for name, ok := range want {
		if v, found := sample(fams, name, "mv"); !found || !ok(v) {
			t.Errorf("%s{volume=mv} = %v (found %v)", name, v, found)
		}
	}
	if v, found := sample(fams, "securevol_volumes", ""); !found || v != 1 {
		t.Errorf("securevol_volumes = %v (found %v)", v, found)
	}

	// The textfile catches up within a few intervals.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(cfg.MetricsTextfile)
		if err == nil {
			fams, err := parseText(string(b))
			if err != nil {
				t.Fatalf("textfile: %v", err)
			}
			if v, ok := sample(fams, "securevol_written_bytes_total", "mv"); ok && v >= float64(len(data)) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("textfile never showed the write: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("metrics socket left after stop: %v", err)
	}
}

func scrapeUnix(t *testing.T, sock string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := testenv.UnixClient(sock, 10*time.Second).Get("http://metrics/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := parseText(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func parseText(s string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(s))
}

// sample is the value of the family's sample labelled volume (any sample
// if volume is "").
func sample(fams map[string]*dto.MetricFamily, name, volume string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := volume == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "volume" && l.GetValue() == volume {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}
