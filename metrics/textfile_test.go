package metrics_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/metrics"
)

// TestTextfileIsAtomicAndParses reads the textfile over and over while it
// is rewritten every millisecond with changing values: every read must be
// a whole file that parses, with securevol metrics only.
func TestTextfileIsAtomicAndParses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "securevol.prom")
	m := metrics.New(metrics.Options{Version: "test"})
	obs := m.Volume("vol")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.RunTextfile(ctx, path, time.Millisecond) }()

	var last float64
	deadline := time.Now().Add(10 * time.Second)
	for reads := 0; reads < 300; {
		obs.Write(4096)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) && time.Now().Before(deadline) {
			continue // not written yet
		}
		if err != nil {
			t.Fatal(err)
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		mfs, err := p.TextToMetricFamilies(f)
		f.Close()
		if err != nil {
			t.Fatalf("read %d: textfile does not parse: %v", reads, err)
		}
		if mfs["securevol_info"] == nil || mfs["securevol_written_bytes_total"] == nil {
			t.Fatalf("read %d: textfile lacks securevol_info or written bytes: %v", reads, mfs)
		}
		for name := range mfs {
			if !strings.HasPrefix(name, "securevol_") {
				t.Errorf("textfile holds %s: node_exporter has its own of that name", name)
			}
		}
		last = mfs["securevol_written_bytes_total"].Metric[0].Counter.GetValue()
		reads++
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last == 0 {
		t.Error("the textfile never showed the writes")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "securevol.prom" {
		t.Errorf("the folder holds %v, want only securevol.prom (no temporary files left)", ents)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("textfile mode %v, want 0644 for node_exporter", fi.Mode().Perm())
	}
}

func TestTextfileRefusesWhatNodeExporterIgnores(t *testing.T) {
	m := metrics.New(metrics.Options{})
	for _, p := range []string{"securevol.txt", "securevol.prom.tmp", "securevol"} {
		path := filepath.Join(t.TempDir(), p)
		if err := m.WriteTextfile(path); !errors.Is(err, metrics.ErrTextfileName) {
			t.Errorf("WriteTextfile(%s) = %v, want ErrTextfileName", p, err)
		}
		if err := m.RunTextfile(context.Background(), path, time.Second); !errors.Is(err, metrics.ErrTextfileName) {
			t.Errorf("RunTextfile(%s) = %v, want ErrTextfileName", p, err)
		}
	}
}

// TestObserverHotPathDoesNotAllocate: the per-request calls run on every
// FUSE request and must cost no allocation once an op has been seen.
func TestObserverHotPathDoesNotAllocate(t *testing.T) {
	obs := metrics.New(metrics.Options{}).Volume("vol")
	obs.Request(cryptfs.OpRead, time.Millisecond) // the op's first request makes its series
	allocs := testing.AllocsPerRun(1000, func() {
		obs.Request(cryptfs.OpRead, 300*time.Microsecond)
		obs.Read(128 << 10)
		obs.Write(128 << 10)
		obs.AuthFailure()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request", allocs)
	}
}

func BenchmarkObserverRequest(b *testing.B) {
	obs := metrics.New(metrics.Options{}).Volume("vol")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			obs.Request(cryptfs.OpWrite, 300*time.Microsecond)
			obs.Write(128 << 10)
		}
	})
}
