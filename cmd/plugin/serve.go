package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/store"
)

// serveConfig is `securevol serve`'s configuration. Every flag can also be
// set by an environment variable (SECUREVOL_ + the flag in upper snake
// case), which is how a managed plugin's settable env reaches it; a flag on
// the command line wins over the variable.
type serveConfig struct {
	socket     string
	stateDir   string
	mountRoot  string
	keyFile    string
	passFile   string
	keyCommand string
	logLevel   string
	logFormat  string
	rebuild    bool

	keyFileChosen bool // --key-file or SECUREVOL_KEY_FILE given explicitly
}

const (
	defaultSocket   = "/run/docker/plugins/securevol.sock"
	defaultStateDir = "/var/lib/securevol"
	defaultKeyFile  = "/etc/securevol/master.key"
)

func envName(flagName string) string {
	return "SECUREVOL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// stringFlag defines a string flag whose default comes from its env var.
// An empty variable counts as unset: a managed plugin's config lists its
// settable variables with empty values.
func stringFlag(fs *flag.FlagSet, p *string, name, def, usage string) {
	if v := os.Getenv(envName(name)); v != "" {
		def = v
	}
	fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
}

func parseServe(args []string) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; -h prints below
	stringFlag(fs, &c.socket, "socket", defaultSocket, "Unix socket the engine connects to")
	stringFlag(fs, &c.stateDir, "state-dir", defaultStateDir, "database and encrypted backing folders")
	stringFlag(fs, &c.mountRoot, "mount-root", "", "where volumes are mounted, one directory per name (default <state-dir>/mnt; a managed plugin must use a path under its propagatedMount, e.g. /mnt/volumes)")
	stringFlag(fs, &c.keyFile, "key-file", defaultKeyFile, "master key file, 32 raw bytes, mode 0600; generated on first start if absent")
	stringFlag(fs, &c.passFile, "passphrase-file", "", "derive the master key from the passphrase in this file (Argon2id) instead of a key file")
	stringFlag(fs, &c.keyCommand, "key-command", "", "run this program (split on spaces, no shell) and use the key it prints: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes; this command line is not secret (every local user sees it in the process list): the program reads its credentials from a file or its environment")
	// Not secret by contract (see above), but an admin may have put a
	// credential there anyway: -h need not repeat it from the environment.
	fs.Lookup("key-command").DefValue = ""
	stringFlag(fs, &c.logLevel, "log-level", "info", "debug, info, warn or error")
	stringFlag(fs, &c.logFormat, "log-format", "text", "text or json")
	rebuildDef := false
	if v := os.Getenv(envName("rebuild")); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: want true or false: %w", envName("rebuild"), v, errUsage)
		}
		rebuildDef = b
	}
	fs.BoolVar(&c.rebuild, "rebuild", rebuildDef, "move the database aside and rebuild it from the backing folders' headers (mount references are lost) (env "+envName("rebuild")+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fmt.Fprintln(os.Stderr, "usage: securevol serve [flags]")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%v: %w", err, errUsage)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	c.keyFileChosen = os.Getenv(envName("key-file")) != ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "key-file" {
			c.keyFileChosen = true
		}
	})
	if c.mountRoot == "" {
		c.mountRoot = filepath.Join(c.stateDir, "mnt")
	}
	for _, p := range []*string{&c.socket, &c.stateDir, &c.mountRoot} {
		if !filepath.IsAbs(*p) {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, err
			}
			*p = abs
		}
	}
	n := 0
	for _, chosen := range []bool{c.keyFileChosen, c.passFile != "", c.keyCommand != ""} {
		if chosen {
			n++
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("choose one master key source: --key-file, --passphrase-file or --key-command: %w", errUsage)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json: %w", c.logFormat, errUsage)
	}
	if _, err := logrus.ParseLevel(c.logLevel); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error: %w", c.logLevel, errUsage)
	}
	return c, nil
}

func newServeLogger(c *serveConfig) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	lvl, _ := logrus.ParseLevel(c.logLevel)
	l.SetLevel(lvl)
	if c.logFormat == "json" {
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	}
	return logrus.NewEntry(l)
}

func dbPath(stateDir string) string { return filepath.Join(stateDir, "securevol.db") }

// AdminSocketName is the root-only socket in the state dir through which
// `securevol key rotate` reaches a running daemon.
const adminSocketName = "admin.sock"

// runServe runs the Docker volume plugin daemon: load state, clean up after
// a crash, mount what is still in use, and only then listen, because the
// engine forgets every volume whose Get fails after its own restart.
func runServe(args []string) error {
	c, err := parseServe(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := newServeLogger(c)
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := os.MkdirAll(c.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if c.rebuild {
		if err := moveDBAside(c.stateDir, log); err != nil {
			return err
		}
	}
	st, err := store.Open(dbPath(c.stateDir), 2*time.Second)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("another securevol serve is running on state dir %s (%w)", c.stateDir, err)
	}
	if errors.Is(err, store.ErrDamaged) {
		return fmt.Errorf("%w; move it aside and start with --rebuild", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()

	keys, err := loadKeys(c, st, log)
	if err != nil {
		return err
	}
	drv, err := driver.New(driver.Config{
		StateDir: c.stateDir, MountRoot: c.mountRoot, Store: st,
		Keys: keys.sources, KeyKind: keys.kind, Log: log,
	})
	if err != nil {
		return err
	}
	rep, err := drv.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := drv.Close(); err != nil {
			log.WithError(err).Error("unmounting at shutdown")
		}
		log.WithField("took", time.Since(start).Round(time.Millisecond)).Info("stopped")
	}()
	log.WithFields(logrus.Fields{"volumes": rep.Volumes, "recovered": len(rep.Recovered), "finished_removals": len(rep.Finished),
		"stale_mounts": rep.StaleMounts, "remounted": rep.Remounted, "problems": len(rep.Problems), "took": rep.Took.Round(time.Millisecond)}).Info("state loaded")

	adminPath := filepath.Join(c.stateDir, adminSocketName)
	al, err := listenUnix(adminPath, 0o600)
	if err != nil {
		return err
	}
	// The plugin socket comes last: once it shows, the daemon is ready.
	l, err := listenUnix(c.socket, 0o660)
	if err != nil {
		al.Close()
		os.Remove(adminPath)
		return err
	}
	srv := driver.NewServer(driver.NewHandler(drv, log), driver.DefaultServerLimits())
	adm := &admin{cfg: c, drv: drv, log: log, keys: keys}
	asrv := adm.server()

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	go func() { errc <- asrv.Serve(al) }()
	log.WithFields(logrus.Fields{"socket": c.socket, "mount_root": c.mountRoot, "state_dir": c.stateDir, "master_key": keys.kind,
		"took": time.Since(start).Round(time.Millisecond)}).Info("securevol ready")
	if keys.pendingRotation != nil {
		go adm.finishPendingRotation()
	}

	var serveErr error
	select {
	case <-ctx.Done():
		start = time.Now()
		log.Info("shutting down: closing the socket, then unmounting every volume")
	case serveErr = <-errc:
		log.WithError(serveErr).Error("server failed; shutting down")
	}
	// The engine sends SIGKILL 10 s after SIGTERM: leave time to unmount.
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := asrv.Shutdown(sctx); err != nil {
		asrv.Close()
	}
	os.Remove(c.socket)
	os.Remove(adminPath)
	if serveErr != nil {
		// A non-zero exit lets systemd's Restart= bring the daemon back.
		return fmt.Errorf("serve %s: %w", c.socket, serveErr)
	}
	return nil
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

// listenUnix listens on path with the given mode, owned by root. A stale
// socket left by a crash is replaced; a live one (another daemon) is not.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Made in place, the socket would show for a moment with the umask's
	// mode (0777 under umask 0: anyone could connect) and be found by a
	// client before it is ready; so it is made under a hidden name and
	// renamed into place with its mode and owner set.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the temporary socket a crash left: %w", err)
	}
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	fail := func(what string, err error) (net.Listener, error) {
		l.Close() // unlinks tmp
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail("socket mode", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmp, 0, 0); err != nil {
			return fail("socket owner", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail("socket", err)
	}
	// Close must not unlink tmp: it is gone, and the name may be another
	// start's by then. runServe removes path itself.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}
