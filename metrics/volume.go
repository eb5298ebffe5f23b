package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/securevol/securevol/cryptfs"
)

// volume is the cryptfs.Observer of one volume's mounts. Its counters are
// resolved once, so a request costs an atomic add or two and a histogram
// observation: no lock, no allocation, no label lookup.
type volume struct {
	m    *Metrics
	name string

	readBytes, writtenBytes prometheus.Counter
	readOps, writeOps       prometheus.Counter
	authFailures            prometheus.Counter
	mountsTotal             prometheus.Counter
	mounted                 prometheus.Gauge

	// latency holds each op's histogram once the op is first seen, so
	// that only ops in use have series.
	latency [cryptfs.NumOps]atomic.Pointer[opLatency]
	// removed is set (under m.mu) when the volume's series are deleted:
	// from then on no new series may be made for it.
	removed bool
}

type opLatency struct{ prometheus.Observer }

var _ cryptfs.Observer = (*volume)(nil)

// newVolume resolves name's series. m.mu is held.
func (m *Metrics) newVolume(name string) *volume {
	v := &volume{
		m:            m,
		name:         name,
		readBytes:    m.readBytes.WithLabelValues(name),
		writtenBytes: m.writtenBytes.WithLabelValues(name),
		readOps:      m.readOps.WithLabelValues(name),
		writeOps:     m.writeOps.WithLabelValues(name),
		authFailures: m.authFailures.WithLabelValues(name),
		mountsTotal:  m.mountsTotal.WithLabelValues(name),
		mounted:      m.mounted.WithLabelValues(name),
	}
	v.mounted.Set(0) // exported from the start, so "not mounted" shows
	return v
}

func (v *volume) Read(n int) {
	v.readOps.Inc()
	v.readBytes.Add(float64(n))
}

func (v *volume) Write(n int) {
	v.writeOps.Inc()
	v.writtenBytes.Add(float64(n))
}

func (v *volume) AuthFailure() { v.authFailures.Inc() }

func (v *volume) Request(op cryptfs.Op, d time.Duration) {
	if op >= cryptfs.NumOps {
		return
	}
	h := v.latency[op].Load()
	if h == nil {
		h = v.newLatency(op)
	}
	h.Observe(d.Seconds())
}

// newLatency makes op's histogram at its first request. A volume already
// removed gets one that drops what it observes.
func (v *volume) newLatency(op cryptfs.Op) *opLatency {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if h := v.latency[op].Load(); h != nil {
		return h
	}
	h := &opLatency{v.m.latency.WithLabelValues(v.name, op.String())}
	if v.removed {
		h = &opLatency{prometheus.ObserverFunc(func(float64) {})}
	}
	v.latency[op].Store(h)
	return h
}

func (v *volume) Mounted(took time.Duration) {
	v.m.mountTime.Observe(took.Seconds())
	v.mountsTotal.Inc()
	v.mounted.Inc()
}

// Unmounted counts down rather than setting 0: a server still held open
// elsewhere may end after the volume was mounted again.
func (v *volume) Unmounted() { v.mounted.Dec() }
