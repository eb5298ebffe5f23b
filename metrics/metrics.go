// Package metrics exposes securevol's metrics in the Prometheus format: per
// volume (label volume=<name>, never anything else about its content)
// bytes and requests read and written, request latencies by FUSE op,
// authentication failures, mounts and space used; and the daemon's
// health. They are served over HTTP (Serve, on a Unix socket or a TCP
// listener the caller opens) and written as a node_exporter textfile
// (RunTextfile).
//
// Each volume's series appear at its first mount (or a first call of
// Volume) and are deleted when it is removed (Remove), so their number
// follows the volumes'. Nothing here knows about Docker: the driver hands
// each mount the cryptfs.Observer that Volume returns.
package metrics

import (
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/cryptfs"
)

// Options configure Metrics. The functions are called at each scrape and
// textfile write (never on a request path), perhaps at the same time; a
// nil one leaves its series out.
type Options struct {
	// Version is shown as the version label of securevol_info.
	Version string
	// Volumes is the number of volumes the daemon knows.
	Volumes func() int
	// Mounted is the number of volumes mounted now.
	Mounted func() int
	// Quarantined is the number of damaged records set aside.
	Quarantined func() int
	// Problems is the number of volumes with a problem found at start-up.
	Problems func() int
	// UsedBytes is the ciphertext a volume holds in its backing folder;
	// ok false leaves the volume's sample out (not known now).
	UsedBytes func(volume string) (bytes int64, ok bool)
	// LimitBytes is a volume's size limit; ok false if it has none.
	LimitBytes func(volume string) (bytes int64, ok bool)
	// Log receives errors of scrapes and textfile writes; nil discards.
	Log *logrus.Entry
}

// Metrics is the registry of one daemon. Create it with New before the
// first mount: the driver asks it for each mount's observer.
type Metrics struct {
	log *logrus.Entry
	// reg holds securevol_* only: it is what the textfile gets, since
	// node_exporter has Go and process metrics of its own under the same
	// names. runtime adds those of this process for HTTP scrapes.
	reg     *prometheus.Registry
	runtime *prometheus.Registry

	readBytes, writtenBytes *prometheus.CounterVec
	readOps, writeOps       *prometheus.CounterVec
	authFailures            *prometheus.CounterVec
	mountsTotal             *prometheus.CounterVec
	mounted                 *prometheus.GaugeVec
	latency                 *prometheus.HistogramVec
	mountTime               prometheus.Histogram
	reconcile               prometheus.Gauge

	mu      sync.Mutex
	volumes map[string]*volume // by name; guarded by mu
}

// New registers every metric and returns the registry.
func New(opts Options) *Metrics {
	m := &Metrics{
		log:     opts.Log,
		reg:     prometheus.NewRegistry(),
		runtime: prometheus.NewRegistry(),
		volumes: map[string]*volume{},
	}
	if m.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		m.log = logrus.NewEntry(l)
	}
	m.runtime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerVolumeMetrics()
	m.registerDaemonMetrics(opts)
	return m
}

// registerVolumeMetrics registers the series each volume has.
func (m *Metrics) registerVolumeMetrics() {
	perVolume := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"volume"})
	}
	m.readBytes = perVolume("securevol_read_bytes_total", "Plaintext bytes read through the volume's mount.")
	m.writtenBytes = perVolume("securevol_written_bytes_total", "Plaintext bytes written through the volume's mount.")
	m.readOps = perVolume("securevol_read_ops_total", "READ requests answered by the volume's mount.")
	m.writeOps = perVolume("securevol_write_ops_total", "WRITE requests stored by the volume's mount.")
	m.authFailures = perVolume("securevol_auth_failures_total",
		"Stored data of the volume that failed authentication or was damaged (a block, name, file header, symlink target, extended attribute value or directory IV): tampering or corruption. Reads of it fail with EIO; the log names the backing path.")
	m.mountsTotal = perVolume("securevol_mounts_total", "Times the volume was mounted.")
	m.mounted = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "securevol_volume_mounted", Help: "FUSE mounts of the volume being served: 1 while mounted, 0 when not (briefly 2 if an old mount held open elsewhere outlives a new one)."}, []string{"volume"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "securevol_request_duration_seconds",
		Help: "Time to answer a FUSE request, by op (only ops seen have series).",
		// FUSE requests take from tens of microseconds (a cached
		// lookup) to seconds (an fsync on a slow disk).
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3, 1, 5},
	}, []string{"volume", "op"})
	m.reg.MustRegister(m.readBytes, m.writtenBytes, m.readOps, m.writeOps, m.authFailures, m.mountsTotal, m.mounted, m.latency)
}

// registerDaemonMetrics registers the daemon's own series and those read
// from opts' callbacks.
func (m *Metrics) registerDaemonMetrics(opts Options) {
	m.mountTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "securevol_mount_duration_seconds",
		Help:    "Time to bring up a volume's FUSE mount.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
	m.reconcile = prometheus.NewGauge(prometheus.GaugeOpts{Name: "securevol_startup_reconcile_seconds", Help: "Time the daemon's start-up took to load and reconcile its state."})
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "securevol_info", Help: "1 while the daemon runs; its version as a label.",
		ConstLabels: prometheus.Labels{"version": opts.Version}})
	info.Set(1)
	m.reg.MustRegister(m.mountTime, m.reconcile, info)
	m.registerPerVolume("securevol_used_bytes", "Ciphertext bytes the volume holds in its backing folder.", opts.UsedBytes)
	m.registerPerVolume("securevol_size_limit_bytes", "The volume's size limit (only volumes that have one).", opts.LimitBytes)
	m.registerCount("securevol_volumes", "Volumes the daemon knows.", opts.Volumes)
	m.registerCount("securevol_volumes_mounted", "Volumes mounted now.", opts.Mounted)
	m.registerCount("securevol_quarantined_records", "Damaged database records set aside.", opts.Quarantined)
	m.registerCount("securevol_volume_problems", "Volumes with a problem found at start-up (see docker volume inspect).", opts.Problems)
}

// registerCount exports f as a gauge read at each scrape, if f is set.
func (m *Metrics) registerCount(name, help string, f func() int) {
	if f == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
}

// SetReconcileDuration records how long start-up took to reconcile the
// daemon's state.
func (m *Metrics) SetReconcileDuration(d time.Duration) { m.reconcile.Set(d.Seconds()) }

// Volume returns the observer of volume name's mounts, creating its series
// at the first call. Pass it as cryptfs.Options.Observer.
func (m *Metrics) Volume(name string) cryptfs.Observer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v := m.volumes[name]; v != nil {
		return v
	}
	v := m.newVolume(name)
	m.volumes[name] = v
	return v
}

// Remove deletes the series of a removed volume. A server of it that still
// runs (held open elsewhere) goes on counting into series nobody exports.
func (m *Metrics) Remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.volumes[name]
	if v == nil {
		return
	}
	v.removed = true
	delete(m.volumes, name)
	for _, vec := range []*prometheus.MetricVec{m.readBytes.MetricVec, m.writtenBytes.MetricVec, m.readOps.MetricVec,
		m.writeOps.MetricVec, m.authFailures.MetricVec, m.mountsTotal.MetricVec, m.mounted.MetricVec, m.latency.MetricVec} {
		vec.DeletePartialMatch(prometheus.Labels{"volume": name})
	}
}

// names lists the volumes with series.
func (m *Metrics) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.volumes))
	for n := range m.volumes {
		out = append(out, n)
	}
	return out
}

// registerPerVolume exports f for each volume with series, read at each
// scrape, if f is set.
func (m *Metrics) registerPerVolume(name, help string, f func(string) (int64, bool)) {
	if f == nil {
		return
	}
	m.reg.MustRegister(volumeFunc{m: m, f: f, desc: prometheus.NewDesc(name, help, []string{"volume"}, nil)})
}

// volumeFunc is a per-volume gauge whose values a callback gives.
type volumeFunc struct {
	m    *Metrics
	f    func(volume string) (int64, bool)
	desc *prometheus.Desc
}

func (c volumeFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c volumeFunc) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.m.names() {
		if v, ok := c.f(n); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), n)
		}
	}
}
