// Package daemon runs securevol's Docker volume plugin daemon: it opens
// the state (database, master key, backing folders), brings them in line
// with the disk, serves the engine on the plugin socket and the
// administrator on a root-only admin socket, and shuts down in order.
//
// Run is the daemon; Client talks to a running one; RotateKey re-wraps
// every volume under a new master key, through the daemon if one runs.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/keysource"
	"github.com/securevol/securevol/metrics"
	"github.com/securevol/securevol/store"
)

// Defaults of a daemon run as the legacy plugin (systemd) or the managed
// one (plugin-config.json passes the same paths).
const (
	DefaultSocket   = "/run/docker/plugins/securevol.sock"
	DefaultStateDir = "/var/lib/securevol"
	DefaultKeyFile  = "/etc/securevol/master.key"
	// DefaultClusterRoot is where the backing folders live in cluster
	// mode: shared storage every node mounts at the same path.
	DefaultClusterRoot = "/var/lib/securevol-shared"
)

// adminSocketName is the root-only socket in the state dir that Client
// dials.
const adminSocketName = "admin.sock"

// metricsSocketName is the default metrics socket in the state dir.
const metricsSocketName = "metrics.sock"

// AdminSocket is the path of the admin socket of the daemon on stateDir.
func AdminSocket(stateDir string) string { return filepath.Join(stateDir, adminSocketName) }

// shutdownWait bounds how long the servers wait for requests in flight at
// shutdown: the engine sends SIGKILL 10 s after SIGTERM, and unmounting
// needs the rest.
const shutdownWait = 3 * time.Second

// Config configures Run. Paths are made absolute.
type Config struct {
	// Socket is the plugin socket the engine connects to.
	Socket string
	// StateDir holds the database, the backing folders and the admin
	// socket.
	StateDir string
	// MountRoot is where volumes are mounted, one directory per name; ""
	// is StateDir/mnt. A managed plugin's must lie under its
	// propagatedMount.
	MountRoot string
	// Keys is the master key source. A Spec naming none means the key
	// file DefaultKeyFile, generated on first start if no volume needs an
	// older one. Prompt is not used: a daemon has no one to ask.
	Keys keysource.Spec
	// Rebuild moves the database aside first, so start-up rebuilds it from
	// the backing folders' headers (mount references are lost).
	Rebuild bool
	// RemoveGrace keeps a removed volume's key and folder this long, out of
	// sight, so that Client.Undelete can bring it back; 0 destroys the key
	// at once (crypto-shredding, final).
	RemoveGrace time.Duration
	// DefaultSize is the size limit of volumes created without a size
	// option, in the option's syntax (e.g. "10G"); "" is none.
	DefaultSize string
	// MetricsSocket is the Unix socket (0600) serving Prometheus metrics
	// at /metrics; "" is StateDir/metrics.sock.
	MetricsSocket string
	// MetricsAddr, if set, serves them on this TCP address too (a legacy
	// plugin; the managed one does not offer it as a setting).
	MetricsAddr string
	// MetricsTextfile, if set, is a node_exporter textfile (*.prom) that
	// the metrics are written to every MetricsInterval (0: 15 s).
	MetricsTextfile string
	MetricsInterval time.Duration
	// Cluster, with Endpoints set, turns on cluster mode: etcd holds the
	// records and the mount claims, the backing folders live under
	// ClusterRoot, and the state dir keeps only this node's sockets and
	// files. Its Log is the daemon's; NodeName "" is the host name.
	Cluster cluster.Config
	// ClusterRoot is the backing root on shared storage in cluster mode;
	// "" is DefaultClusterRoot. It must exist.
	ClusterRoot string
	// WritableBDI makes /sys/devices/virtual/bdi, and nothing else of
	// /sys, writable in the daemon's mount namespace first (see sysfs.go):
	// for a managed plugin, whose /sys is read-only; never for a daemon in
	// the host's namespace.
	WritableBDI bool
	// Version is shown by the securevol_info metric.
	Version string
	// Log receives the daemon's log; nil discards it.
	Log *logrus.Entry
}

// defaultMetricsInterval is how often the metrics textfile is written:
// Prometheus' usual scrape interval.
const defaultMetricsInterval = 15 * time.Second

// withDefaults fills in what cfg leaves open.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.MountRoot == "" {
		cfg.MountRoot = filepath.Join(cfg.StateDir, "mnt")
	}
	if cfg.MetricsSocket == "" {
		cfg.MetricsSocket = filepath.Join(cfg.StateDir, metricsSocketName)
	}
	if cfg.MetricsInterval <= 0 {
		cfg.MetricsInterval = defaultMetricsInterval
	}
	if cfg.RemoveGrace < 0 {
		return cfg, fmt.Errorf("remove grace %v: %w", cfg.RemoveGrace, ErrBadConfig)
	}
	if cfg.MetricsTextfile != "" && !strings.HasSuffix(cfg.MetricsTextfile, ".prom") {
		return cfg, fmt.Errorf("metrics textfile %s: %w", cfg.MetricsTextfile, metrics.ErrTextfileName)
	}
	for _, p := range []*string{&cfg.Socket, &cfg.StateDir, &cfg.MountRoot, &cfg.MetricsSocket} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return cfg, err
		}
		*p = abs
	}
	cfg.Keys = withDefaultKeyFile(cfg.Keys)
	cfg.Keys.Prompt = nil
	if cfg.Log == nil {
		cfg.Log = discardLog()
	}
	if cfg.clustered() {
		return cfg.clusterDefaults()
	}
	return cfg, nil
}

func (cfg Config) clustered() bool { return len(cfg.Cluster.Endpoints) > 0 }

// clusterDefaults fills in and checks the cluster settings.
func (cfg Config) clusterDefaults() (Config, error) {
	if cfg.ClusterRoot == "" {
		cfg.ClusterRoot = DefaultClusterRoot
	}
	abs, err := filepath.Abs(cfg.ClusterRoot)
	if err != nil {
		return cfg, err
	}
	cfg.ClusterRoot = abs
	fi, err := os.Stat(abs)
	if err != nil || !fi.IsDir() {
		return cfg, fmt.Errorf("cluster root %s: %w: must be an existing directory on storage every node shares", abs, ErrBadConfig)
	}
	// The managed plugin's shared mount defaults to the state folder's
	// source, so that a single host needs no extra folder; a cluster that
	// forgot to point it at shared storage would keep its volumes local.
	if st, err := os.Stat(cfg.StateDir); err == nil && os.SameFile(fi, st) {
		return cfg, fmt.Errorf("cluster root %s: %w: it is the state dir %s; it must be a directory on storage every node shares", abs, ErrBadConfig, cfg.StateDir)
	}
	if cfg.Cluster.NodeName == "" {
		if cfg.Cluster.NodeName, err = os.Hostname(); err != nil {
			return cfg, fmt.Errorf("node name: %w", err)
		}
	}
	cfg.Cluster.Log = cfg.Log.WithField("node", cfg.Cluster.NodeName)
	return cfg, nil
}

// volumesRoot holds the backing folders (in its volumes folder): the
// state dir, or the cluster root in cluster mode.
func (cfg Config) volumesRoot() string {
	if cfg.clustered() {
		return cfg.ClusterRoot
	}
	return cfg.StateDir
}

func discardLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// withDefaultKeyFile names DefaultKeyFile in a Spec that names no source.
func withDefaultKeyFile(s keysource.Spec) keysource.Spec {
	if s.KeyFile == "" && s.PassphraseFile == "" && s.Command == "" {
		s.KeyFile = DefaultKeyFile
	}
	return s
}

func dbPath(stateDir string) string { return filepath.Join(stateDir, "securevol.db") }

// service is a running daemon's state, shared by its admin calls.
type service struct {
	cfg     Config
	drv     *driver.Driver
	keys    *masterKeys
	log     *logrus.Entry
	metrics *metrics.Metrics
	node    *cluster.Node // nil on a single host
	// rotating admits one key rotation at a time.
	rotating sync.Mutex
}

// Run runs the daemon until ctx is cancelled (the command cancels it on
// SIGTERM) or a server fails. It loads the state, cleans up after a crash
// and mounts again what is still in use before it listens, because the
// engine forgets every volume whose Get fails after its own restart; the
// plugin socket opens last, and systemd hears READY=1 only then.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Log
	start := time.Now()
	if cfg.WritableBDI {
		if err := makeBDIWritable(); err != nil {
			log.WithError(err).Warn("/sys stays read-only: volumes keep the kernel's 128 KiB readahead, and sequential reads are slower")
		}
	}

	node, st, unlockNode, err := openStore(cfg)
	if err != nil {
		return err
	}
	// Deferred before the node's Close, so it runs after: the next
	// daemon on this state dir revokes the lease only once this one
	// writes nothing more under it.
	defer unlockNode()
	if node != nil {
		// Deferred first, so it runs last: the driver unmounts (and lets
		// go of its claims) before the lease goes.
		defer node.Close()
	}
	defer st.Close()
	keys, err := loadKeys(cfg, st)
	if err != nil {
		return err
	}
	defaultSize, err := parseDefaultSize(cfg.DefaultSize)
	if err != nil {
		return err
	}
	// The metrics come first: Start remounts volumes, and each mount
	// takes its volume's observer.
	var drv *driver.Driver
	var rep *driver.StartReport
	m := newMetrics(cfg, st, func() *driver.Driver { return drv }, func() *driver.StartReport { return rep })
	drv, err = driver.New(driver.Config{
		StateDir: cfg.volumesRoot(), MountRoot: cfg.MountRoot, Store: st, Cluster: node,
		Keys: keys.sources, KeyKind: string(keys.kind), Log: log,
		Metrics: m, RemoveGrace: cfg.RemoveGrace, DefaultSize: defaultSize,
	})
	if err != nil {
		return err
	}
	rep, err = drv.Start()
	if err != nil {
		return err
	}
	m.SetReconcileDuration(rep.Took)
	// Every known volume has series from the start, not only from its
	// first mount, so a dashboard lists the idle ones too.
	if list, err := drv.List(); err == nil {
		for _, v := range list.Volumes {
			m.Volume(v.Name)
		}
	}
	defer func() {
		if err := drv.Close(); err != nil {
			log.WithError(err).Error("unmounting at shutdown")
		}
		log.WithField("took", time.Since(start).Round(time.Millisecond)).Info("stopped")
	}()
	log.WithFields(logrus.Fields{"volumes": rep.Volumes, "recovered": len(rep.Recovered), "finished_removals": len(rep.Finished),
		"stale_mounts": rep.StaleMounts, "remounted": rep.Remounted, "problems": len(rep.Problems),
		"quarantined": len(rep.Quarantined), "in_grace": rep.InGrace, "took": rep.Took.Round(time.Millisecond)}).Info("state loaded")

	cleanTransfers(cfg.StateDir, log)
	svc := &service{cfg: cfg, drv: drv, keys: keys, log: log, metrics: m, node: node}
	return svc.serve(ctx, start)
}

// parseDefaultSize reads a default size limit as the size option does.
func parseDefaultSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	o, err := driver.ParseOptions(map[string]string{"size": s})
	if err != nil {
		return 0, fmt.Errorf("default size: %w: %w", err, ErrBadConfig)
	}
	return o.Size, nil
}

// openStore opens the state dir's database, moved aside first for a
// rebuild; in cluster mode, it joins the cluster and opens the records in
// etcd, those of the volumes cleared first for a rebuild.
// unlock, in cluster mode, lets the next daemon have the state dir.
func openStore(cfg Config) (node *cluster.Node, st *store.Store, unlock func(), err error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("state dir: %w", err)
	}
	if cfg.clustered() {
		instance, unlock, err := lockNode(cfg.StateDir)
		if err != nil {
			return nil, nil, nil, err
		}
		cfg.Cluster.Instance = instance
		node, st, err := openClusterStore(cfg)
		if err != nil {
			unlock()
			return nil, nil, nil, err
		}
		return node, st, unlock, nil
	}
	if cfg.Rebuild {
		if err := moveDBAside(cfg.StateDir, cfg.Log); err != nil {
			return nil, nil, nil, err
		}
	}
	st, err = store.Open(dbPath(cfg.StateDir), 2*time.Second)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, nil, fmt.Errorf("state dir %s: %w (%w)", cfg.StateDir, ErrRunning, err)
	}
	return nil, st, func() {}, err
}

func openClusterStore(cfg Config) (*cluster.Node, *store.Store, error) {
	node, err := cluster.Join(cfg.Cluster)
	if errors.Is(err, cluster.ErrConfig) {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("joining the cluster: %w", err)
	}
	if cfg.Rebuild {
		if err := node.ClearRecords(); err != nil {
			node.Close()
			return nil, nil, fmt.Errorf("rebuild: %w", err)
		}
		cfg.Log.Warn("rebuilding the cluster's volume records from the backing folders under the cluster root")
	}
	st, err := store.New(node.Records())
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	cfg.Log.WithFields(logrus.Fields{"node": node.Name(), "endpoints": strings.Join(cfg.Cluster.Endpoints, ","), "cluster_root": cfg.ClusterRoot}).Info("joined the cluster")
	return node, st, nil
}

// serve listens on both sockets and serves until ctx ends or a server
// fails, then shuts them down.
func (s *service) serve(ctx context.Context, start time.Time) error {
	cfg, log := s.cfg, s.log
	adminPath := AdminSocket(cfg.StateDir)
	al, err := listenUnix(adminPath, 0o600)
	if err != nil {
		return err
	}
	// The plugin socket comes last: once it shows, the daemon is ready.
	l, err := listenUnix(cfg.Socket, 0o660)
	if err != nil {
		al.Close()
		os.Remove(adminPath)
		return err
	}
	srv := driver.NewServer(driver.NewHandler(s.drv, log), driver.DefaultServerLimits())
	asrv := s.adminServer()
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	go func() { errc <- asrv.Serve(al) }()

	stopMetrics := s.serveMetrics(ctx)
	defer stopMetrics()
	notify(log, notifyReady)
	log.WithFields(logrus.Fields{"socket": cfg.Socket, "mount_root": cfg.MountRoot, "state_dir": cfg.StateDir, "master_key": s.keys.kind,
		"took": time.Since(start).Round(time.Millisecond)}).Info("securevol ready")
	if s.keys.pendingRotation != nil {
		go s.finishPendingRotation()
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: closing the socket, then unmounting every volume")
	case serveErr = <-errc:
		log.WithError(serveErr).Error("server failed; shutting down")
	}
	notify(log, notifyStopping)
	shutdown(srv, asrv)
	os.Remove(cfg.Socket)
	os.Remove(adminPath)
	if serveErr != nil {
		// A non-zero exit lets systemd's Restart= bring the daemon back.
		return fmt.Errorf("serve %s: %w", cfg.Socket, serveErr)
	}
	return nil
}

// shutdown stops the servers, letting requests in flight finish for up to
// shutdownWait.
func shutdown(servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
	}
}

// moveDBAside keeps the old database (for forensics) under a new name, so
// the store starts empty and start-up reconciliation refills it.
func moveDBAside(stateDir string, log *logrus.Entry) error {
	p := dbPath(stateDir)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	aside := p + ".before-rebuild-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(p, aside); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	log.WithField("old_database", aside).Warn("rebuilding the database from the backing folders; mount references are lost")
	return nil
}

// dialUnix connects to the Unix socket path.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "unix", path)
}
