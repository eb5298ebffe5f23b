package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrTextfileName: node_exporter's textfile collector reads only *.prom.
var ErrTextfileName = errors.New("a textfile's name must end in .prom")

// Path is where Serve answers.
const Path = "/metrics"

// Handler answers scrapes with every metric, the Go runtime's and the
// process's included.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, m.runtime}, promhttp.HandlerOpts{
		ErrorLog: m.log,
		// A failing callback must not hide the other metrics.
		ErrorHandling: promhttp.ContinueOnError,
		// A few scrapers at once are plenty; more get 503 rather
		// than pile up.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Serve answers scrapes at Path on l (a Unix socket the caller made with a
// restrictive mode, or a TCP listener) until ctx is done, then shuts down
// and closes l.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(Path, m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	})
	defer stop()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: %w", err)
}

// WriteTextfile writes the securevol_* metrics (not the Go or process
// ones, which node_exporter has under the same names) to path in the text
// format, atomically: to a temporary file in the same folder, renamed
// over path, so that node_exporter never reads half a file.
func (m *Metrics) WriteTextfile(path string) error {
	if !strings.HasSuffix(path, ".prom") {
		return fmt.Errorf("%s: %w", path, ErrTextfileName)
	}
	if err := prometheus.WriteToTextfile(path, m.reg); err != nil {
		return fmt.Errorf("metrics textfile: %w", err)
	}
	return nil
}

// RunTextfile writes the textfile at once and then every interval until
// ctx is done. A failed write is logged and tried again at the next tick;
// only a path that can never work is returned as an error, at once. The
// file is left in place at the end: node_exporter's
// node_textfile_mtime_seconds shows how old it is.
func (m *Metrics) RunTextfile(ctx context.Context, path string, interval time.Duration) error {
	if !strings.HasSuffix(path, ".prom") {
		return fmt.Errorf("%s: %w", path, ErrTextfileName)
	}
	if interval <= 0 {
		return fmt.Errorf("metrics textfile interval %v: must be positive", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.WriteTextfile(path); err != nil {
			m.log.WithError(err).Warn("writing the metrics textfile")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
