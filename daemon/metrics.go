package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/metrics"
	"github.com/securevol/securevol/store"
)

// newMetrics makes the daemon's registry. The driver and its start report
// do not exist yet when it is made (each mount asks it for an observer),
// so the callbacks reach them through drv and rep, which answer nil until
// then; scrapes begin only after both are set.
func newMetrics(cfg Config, st *store.Store, drv func() *driver.Driver, rep func() *driver.StartReport) *metrics.Metrics {
	return metrics.New(metrics.Options{
		Version: cfg.Version,
		Log:     cfg.Log,
		Volumes: func() int {
			n := 0
			st.View(func(tx *store.Tx) error { n = tx.Count(); return nil })
			return n
		},
		Mounted: func() int {
			if d := drv(); d != nil {
				return d.Mounted()
			}
			return 0
		},
		Quarantined: func() int {
			d := drv()
			if d == nil {
				return 0
			}
			q, _ := d.Quarantined()
			return len(q)
		},
		UsedBytes: func(name string) (int64, bool) {
			if d := drv(); d != nil {
				return d.UsedBytes(name)
			}
			return 0, false
		},
		LimitBytes: func(name string) (int64, bool) {
			if d := drv(); d != nil {
				return d.LimitBytes(name)
			}
			return 0, false
		},
		Problems: func() int {
			if r := rep(); r != nil {
				return len(r.Problems)
			}
			return 0
		},
	})
}

// serveMetrics serves the metrics on the metrics socket, on the TCP
// address if one is set, and into the textfile if one is set, until ctx
// ends. Metrics are not worth refusing to start for: a socket or address
// that fails is logged, and the daemon serves the engine regardless.
func (s *service) serveMetrics(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 3)
	n := 0
	run := func(what string, fn func() error) {
		n++
		go func() {
			if err := fn(); err != nil {
				s.log.WithError(err).Warn(what + " stopped")
			}
			done <- struct{}{}
		}()
	}
	if l, err := listenUnix(s.cfg.MetricsSocket, 0o600); err != nil {
		s.log.WithError(err).Warn("no metrics socket")
	} else {
		run("metrics socket", func() error {
			defer os.Remove(s.cfg.MetricsSocket)
			return s.metrics.Serve(ctx, l)
		})
	}
	if s.cfg.MetricsAddr != "" {
		if l, err := net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			s.log.WithError(fmt.Errorf("metrics address %s: %w", s.cfg.MetricsAddr, err)).Warn("no metrics on TCP")
		} else {
			run("metrics on TCP", func() error { return s.metrics.Serve(ctx, l) })
		}
	}
	if s.cfg.MetricsTextfile != "" {
		// node_exporter reads a folder of its own; make it if need be.
		if err := os.MkdirAll(filepath.Dir(s.cfg.MetricsTextfile), 0o755); err != nil {
			s.log.WithError(err).Warn("no metrics textfile")
		}
		run("metrics textfile", func() error {
			err := s.metrics.RunTextfile(ctx, s.cfg.MetricsTextfile, s.cfg.MetricsInterval)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		})
	}
	return func() {
		cancel()
		for range n {
			<-done
		}
	}
}
