package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/internal/logging"
)

// serveFlags are `securevol serve`'s flags.
type serveFlags struct {
	socket, stateDir, mountRoot string
	keys                        keyFlags
	logLevel, logFormat         string
	rebuild                     bool
	removeGrace                 time.Duration
	defaultSize                 string
	metricsSocket, metricsAddr  string
	metricsTextfile             string
	metricsInterval             time.Duration
	etcdEndpoints               []string
	etcdCACert, etcdCert        string
	etcdKey, etcdUser           string
	etcdPasswordFile            string
	clusterRoot, nodeName       string
	leaseTTL, mountWait         time.Duration
	writableBDI                 bool
}

func newServeCmd(s streams, runServe runDaemon) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Docker volume plugin daemon",
		Long: `Run the Docker volume plugin daemon. It loads its state, cleans up after a
crash, mounts again what containers still use, and only then listens on the
plugin socket. SIGTERM or SIGINT unmounts every volume and stops it.

Every flag can also be set by an environment variable (SECUREVOL_ and the
flag in upper snake case, e.g. SECUREVOL_LOG_LEVEL); a flag on the command
line wins over its variable. Info and debug lines go to standard output,
warnings and errors to standard error.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd.Flags(), s)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runServe(ctx, cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.socket, "socket", daemon.DefaultSocket, "Unix socket the engine connects to")
	fs.StringVar(&f.stateDir, "state-dir", daemon.DefaultStateDir, "database and encrypted backing folders")
	fs.StringVar(&f.mountRoot, "mount-root", "", "where volumes are mounted, one directory per name (default: the state dir's mnt folder; a managed plugin must use a path under its propagatedMount, e.g. /mnt/volumes)")
	f.keys.register(fs, daemon.DefaultKeyFile, "generated on first start if absent")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&f.rebuild, "rebuild", false, "move the database aside and rebuild it from the backing folders' headers (mount references are lost)")
	fs.DurationVar(&f.removeGrace, "remove-grace", 0, "keep a removed volume's key this long (e.g. 72h), out of sight, so that 'securevol volume undelete' can bring it back; 0 destroys it at once")
	fs.StringVar(&f.defaultSize, "default-size", "", "size limit of volumes created without -o size, e.g. 10G (binary units); empty: none")
	fs.StringVar(&f.metricsSocket, "metrics-socket", "", "Unix socket (0600) serving Prometheus metrics at /metrics (default: the state dir's metrics.sock)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve the metrics on this TCP address, e.g. 127.0.0.1:9742 (a legacy plugin; the managed one does not offer it as a setting)")
	fs.StringVar(&f.metricsTextfile, "metrics-textfile", "", "write the metrics to this node_exporter textfile (*.prom) every --metrics-textfile-interval")
	fs.DurationVar(&f.metricsInterval, "metrics-textfile-interval", 15*time.Second, "how often the metrics textfile is written")
	fs.BoolVar(&f.writableBDI, "writable-bdi", false, "make /sys/devices/virtual/bdi (and nothing else of /sys) writable in the daemon's own mount namespace, so volumes' readahead can be raised: for a managed plugin, whose /sys is read-only; never on a host")
	fs.StringSliceVar(&f.etcdEndpoints, "etcd-endpoints", nil, "cluster mode: etcd client URLs, comma-separated (e.g. https://10.0.0.1:2379); unset: a single host, records in the state dir's bbolt file")
	fs.StringVar(&f.etcdCACert, "etcd-cacert", "", "cluster mode: CA certificate (PEM file) that verifies etcd's")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "cluster mode: client certificate (PEM file) for etcd; needs --etcd-key")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "cluster mode: the client certificate's key (PEM file)")
	fs.StringVar(&f.etcdUser, "etcd-user", "", "cluster mode: etcd user; needs --etcd-password-file")
	fs.StringVar(&f.etcdPasswordFile, "etcd-password-file", "", "cluster mode: file holding the etcd user's password (never pass a password itself)")
	fs.StringVar(&f.clusterRoot, "cluster-root", daemon.DefaultClusterRoot, "cluster mode: the backing folders' root on storage every node shares, at the same path on each")
	fs.StringVar(&f.nodeName, "node-name", "", "cluster mode: this node's name, unique in the cluster (default: the host name)")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", cluster.DefaultLeaseTTL, "cluster mode: how long a node that stops answering keeps its volumes (whole seconds, at least 2s); shorter means faster takeover, but a pause or partition longer than it fences a healthy node")
	fs.DurationVar(&f.mountWait, "mount-wait", cluster.DefaultMountWait, "cluster mode: how long a mount waits for the node that holds the volume to let go")
	withEnv(fs, "socket", "state-dir", "mount-root", "key-file", "passphrase-file", "key-command", "log-level", "log-format", "rebuild",
		"remove-grace", "default-size", "metrics-socket", "metrics-addr", "metrics-textfile", "metrics-textfile-interval",
		"etcd-endpoints", "etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file", "cluster-root", "node-name", "lease-ttl", "mount-wait", "writable-bdi")
	return cmd
}

// config is the daemon's configuration from the flags (and their
// environment variables, applied already).
func (f *serveFlags) config(fs *pflag.FlagSet, s streams) (daemon.Config, error) {
	keys, err := f.keys.spec(fs, nil)
	if err != nil {
		return daemon.Config{}, err
	}
	log, err := logging.New(logging.Options{Level: f.logLevel, Format: f.logFormat, Out: s.out, Err: s.err, Journal: os.Getenv("JOURNAL_STREAM") != ""})
	if err != nil {
		return daemon.Config{}, usageError{err}
	}
	return daemon.Config{
		Socket: f.socket, StateDir: f.stateDir, MountRoot: f.mountRoot,
		Keys: keys, Rebuild: f.rebuild, Log: log,
		RemoveGrace: f.removeGrace, DefaultSize: f.defaultSize,
		MetricsSocket: f.metricsSocket, MetricsAddr: f.metricsAddr,
		MetricsTextfile: f.metricsTextfile, MetricsInterval: f.metricsInterval,
		Cluster: cluster.Config{
			Endpoints: f.etcdEndpoints, CACert: f.etcdCACert, Cert: f.etcdCert, Key: f.etcdKey,
			User: f.etcdUser, PasswordFile: f.etcdPasswordFile, NodeName: f.nodeName,
			LeaseTTL: f.leaseTTL, MountWait: f.mountWait,
		},
		ClusterRoot: f.clusterRoot,
		WritableBDI: f.writableBDI,
		Version:     version,
	}, nil
}
