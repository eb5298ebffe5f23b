package metrics_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/metrics"
	"github.com/securevol/securevol/store"
)

// daemon is a driver with metrics, served on a Unix socket as the daemon
// serves them.
type daemon struct {
	t        *testing.T
	stateDir string
	d        *driver.Driver
	client   *http.Client
}

// usedBytes is what the test's UsedBytes callback answers for every volume.
const usedBytes = 12345

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	testenv.RequireFUSE(t)
	root := t.TempDir()
	h := &daemon{t: t, stateDir: filepath.Join(root, "state")}
	st, err := store.Open(filepath.Join(root, "securevol.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mk, err := crypto.RandomMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	var drv *driver.Driver
	m := metrics.New(metrics.Options{
		Version:   "test",
		Volumes:   func() int { vs, _ := st.List(); return len(vs) },
		Mounted:   func() int { return drv.Mounted() },
		UsedBytes: func(string) (int64, bool) { return usedBytes, true },
		// Only beta has a limit.
		LimitBytes: func(v string) (int64, bool) { return 1 << 30, v == "beta" },
	})
	drv, err = driver.New(driver.Config{StateDir: h.stateDir, MountRoot: filepath.Join(root, "mnt"), Store: st,
		Keys: []crypto.KeySource{crypto.StaticKey{Key: mk}}, Log: logrus.NewEntry(log), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	h.d = drv

	sock := filepath.Join(root, "metrics.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	h.client = testenv.UnixClient(sock, 0)
	return h
}

// scrape fetches and parses the metrics over the Unix socket.
func (h *daemon) scrape() map[string]*dto.MetricFamily {
	h.t.Helper()
	resp, err := h.client.Get("http://securevol" + metrics.Path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		h.t.Fatalf("parse scrape: %v", err)
	}
	return mfs
}

// value is the sample of family name whose labels include want (counter,
// gauge or untyped), or a histogram's count; ok is false if there is none.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, w := range want {
			if labels[k] != w {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func (h *daemon) mustValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	h.t.Helper()
	v, ok := value(mfs, name, want)
	if !ok {
		h.t.Fatalf("no %s%v in the scrape", name, want)
	}
	return v
}

func (h *daemon) create(name string) {
	h.t.Helper()
	if err := h.d.Create(&volume.CreateRequest{Name: name}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *daemon) mount(name string) string {
	h.t.Helper()
	r, err := h.d.Mount(&volume.MountRequest{Name: name, ID: "c1"})
	if err != nil {
		h.t.Fatal(err)
	}
	return r.Mountpoint
}

func (h *daemon) unmount(name string) {
	h.t.Helper()
	if err := h.d.Unmount(&volume.UnmountRequest{Name: name, ID: "c1"}); err != nil {
		h.t.Fatal(err)
	}
}

// backingFile is the one data file of volume name's backing folder
// (every volume here holds a single file).
func (h *daemon) backingFile(name string) string {
	h.t.Helper()
	r, err := h.d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		h.t.Fatal(err)
	}
	id, _ := r.Volume.Status["id"].(string)
	var found []string
	filepath.Walk(filepath.Join(h.stateDir, "volumes", id), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !crypto.IsInternalName(fi.Name()) {
			found = append(found, p)
		}
		return nil
	})
	if len(found) != 1 {
		h.t.Fatalf("want one data file in %s's backing folder, found %v", name, found)
	}
	return found[0]
}

// TestScrapeFollowsIOTamperAndRemoval scrapes a daemon's socket while one
// volume is written, read back through a fresh mount, tampered with and
// removed, next to a second volume that must keep its series.
func TestScrapeFollowsIOTamperAndRemoval(t *testing.T) {
	h := newDaemon(t)
	h.create("alpha")
	h.create("beta")
	h.mount("beta")
	h.unmount("beta")

	data := make([]byte, 300<<10)
	rand.Read(data)
	mp := h.mount("alpha")
	if err := os.WriteFile(filepath.Join(mp, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	alpha := map[string]string{"volume": "alpha"}
	mfs := h.scrape()
	if got := h.mustValue(mfs, "securevol_written_bytes_total", alpha); got < float64(len(data)) {
		t.Errorf("written bytes %v after writing %d", got, len(data))
	}
	if got := h.mustValue(mfs, "securevol_write_ops_total", alpha); got < 1 {
		t.Errorf("write ops %v after a write", got)
	}
	if got := h.mustValue(mfs, "securevol_request_duration_seconds", map[string]string{"volume": "alpha", "op": "write"}); got < 1 {
		t.Errorf("%v write latencies recorded", got)
	}
	if got := h.mustValue(mfs, "securevol_volume_mounted", alpha); got != 1 {
		t.Errorf("alpha mounted = %v while mounted", got)
	}
	if got := h.mustValue(mfs, "securevol_volumes_mounted", nil); got != 1 {
		t.Errorf("volumes mounted = %v, want 1", got)
	}
	if got := h.mustValue(mfs, "securevol_volumes", nil); got != 2 {
		t.Errorf("volumes known = %v, want 2", got)
	}
	if got := h.mustValue(mfs, "securevol_used_bytes", alpha); got != usedBytes {
		t.Errorf("used bytes = %v, want the callback's %d", got, usedBytes)
	}
	if _, ok := value(mfs, "securevol_size_limit_bytes", alpha); ok {
		t.Error("a size limit is shown for alpha, which has none")
	}
	if got := h.mustValue(mfs, "securevol_size_limit_bytes", map[string]string{"volume": "beta"}); got != 1<<30 {
		t.Errorf("beta's size limit = %v, want 1 GiB", got)
	}
	if got := h.mustValue(mfs, "securevol_info", map[string]string{"version": "test"}); got != 1 {
		t.Errorf("securevol_info = %v", got)
	}
	if _, ok := value(mfs, "go_goroutines", nil); !ok {
		t.Error("no Go runtime metrics on the socket")
	}

	// A fresh mount has no cached pages: the read reaches the FUSE server.
	h.unmount("alpha")
	mp = h.mount("alpha")
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v (%d bytes)", err, len(got))
	}
	mfs = h.scrape()
	if got := h.mustValue(mfs, "securevol_read_bytes_total", alpha); got < float64(len(data)) {
		t.Errorf("read bytes %v after reading %d", got, len(data))
	}
	if got := h.mustValue(mfs, "securevol_mounts_total", alpha); got != 2 {
		t.Errorf("mounts_total = %v after two mounts", got)
	}
	if got := h.mustValue(mfs, "securevol_mount_duration_seconds", nil); got < 3 {
		t.Errorf("%v mount durations recorded after three mounts", got)
	}
	if got := h.mustValue(mfs, "securevol_auth_failures_total", alpha); got != 0 {
		t.Errorf("auth failures %v before any tampering", got)
	}

	// Flip a ciphertext byte of the first block, then read through a
	// fresh mount: EIO, counted.
	h.unmount("alpha")
	f, err := os.OpenFile(h.backingFile("alpha"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := crypto.BlockOffset(0) + 100
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mp = h.mount("alpha")
	if _, err := os.ReadFile(filepath.Join(mp, "f")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a tampered block: %v, want EIO", err)
	}
	mfs = h.scrape()
	if got := h.mustValue(mfs, "securevol_auth_failures_total", alpha); got < 1 {
		t.Errorf("auth failures %v after reading a tampered block", got)
	}
	h.unmount("alpha")
	if got := h.mustValue(h.scrape(), "securevol_volume_mounted", alpha); got != 0 {
		t.Errorf("alpha mounted = %v after unmount", got)
	}

	if err := h.d.Remove(&volume.RemoveRequest{Name: "alpha"}); err != nil {
		t.Fatal(err)
	}
	mfs = h.scrape()
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "volume" && l.GetValue() == "alpha" {
					t.Errorf("%s still has a series of the removed volume", name)
				}
			}
		}
	}
	if got := h.mustValue(mfs, "securevol_mounts_total", map[string]string{"volume": "beta"}); got != 1 {
		t.Errorf("beta's mounts_total = %v after alpha's removal, want 1", got)
	}
}
