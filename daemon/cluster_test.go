package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/keyfile"
)

// Cluster settings that can never work stop the daemon before it
// serves, with ErrBadConfig and a message saying which.
func TestClusterConfigRefused(t *testing.T) {
	for name, c := range map[string]struct {
		set  func(*Config)
		want string
	}{
		"missing cluster root":     {func(c *Config) { c.ClusterRoot = "/nonexistent/shared" }, "cluster root"},
		"cluster root = state dir": {func(c *Config) { os.MkdirAll(c.StateDir, 0o700); c.ClusterRoot = c.StateDir }, "it is the state dir"},
		"password without user":    {func(c *Config) { c.Cluster.PasswordFile = "/etc/hostname" }, "without an etcd user"},
		"unreadable CA":            {func(c *Config) { c.Cluster.CACert = "/nonexistent/ca.pem" }, "CA certificate"},
		"unreadable client cert":   {func(c *Config) { c.Cluster.Cert, c.Cluster.Key = "/nonexistent/c.pem", "/nonexistent/k.pem" }, "client certificate"},
		"lease TTL below 2s":       {func(c *Config) { c.Cluster.LeaseTTL = time.Second }, "lease TTL"},
		"endpoint without scheme":  {func(c *Config) { c.Cluster.Endpoints = []string{"10.0.0.1:2379"} }, "endpoint"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Cluster = cluster.Config{Endpoints: []string{"http://127.0.0.1:1"}}
			cfg.ClusterRoot = t.TempDir()
			c.set(&cfg)
			err := Run(context.Background(), cfg)
			if !errors.Is(err, ErrBadConfig) || !contains(err, c.want) {
				t.Fatalf("Run: %v; want ErrBadConfig about %q", err, c.want)
			}
		})
	}
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

// A daemon in cluster mode keeps its folders under the cluster root and
// its records in etcd, answers scope global, and generates no key file.
func TestClusterDaemon(t *testing.T) {
	testenv.RequireFUSE(t)
	etcd := testenv.StartEtcd(t)
	cfg := clusterConfig(t, etcd.Endpoints(), "n1", 5*time.Second, t.TempDir(), filepath.Join(t.TempDir(), "master.key"))
	if err := Run(context.Background(), cfg); !errors.Is(err, ErrKeyMissing) {
		t.Fatalf("cluster mode without a key file: %v, want ErrKeyMissing (no key generated)", err)
	}
	if err := keyfile.GenerateKeyFile(cfg.Keys.KeyFile); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	var caps struct{ Capabilities struct{ Scope string } }
	if err := testenv.PluginCall(d.plugin, "/VolumeDriver.Capabilities", struct{}{}, &caps); err != nil || caps.Capabilities.Scope != "global" {
		t.Fatalf("Capabilities: %+v, %v", caps, err)
	}
	if err := testenv.PluginCall(d.plugin, "/VolumeDriver.Create", map[string]any{"Name": "shared-vol"}, nil); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(cfg.ClusterRoot, "volumes"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("cluster root holds %v, %v; want the volume's folder", ents, err)
	}
	if _, err := os.Stat(dbPath(cfg.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bbolt file in cluster mode: %v", err)
	}
}

// A second daemon on a node's state dir is refused while the first runs
// (stopped or not): it would revoke the first's lease as a restart does,
// and other nodes could write the first's volumes before it learns so.
// After the first has gone, the node restarts under its instance and
// joins at once.
func TestClusterSecondDaemonOnStateDirRefused(t *testing.T) {
	testenv.RequireFUSE(t)
	etcd := testenv.StartEtcd(t)
	cfg := clusterConfig(t, etcd.Endpoints(), "n1", 10*time.Second, t.TempDir(), filepath.Join(t.TempDir(), "master.key"))
	if err := keyfile.GenerateKeyFile(cfg.Keys.KeyFile); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	second := cfg
	second.Socket = filepath.Join(t.TempDir(), "second.sock")
	if err := Run(context.Background(), second); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second daemon on the state dir: %v, want ErrRunning", err)
	}
	d.stop()
	start := time.Now()
	startDaemon(t, cfg)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the restart took %v: it waited for its own previous lease", took)
	}
}

// A key rotation in cluster mode re-wraps folders every node opens, and
// only this node gets the new key file: it is refused while another node
// is live, and done once this one is alone. Offline, with the node's
// daemon stopped, it is refused: the volumes are not in its state dir, so
// it would replace the key file and re-wrap none of them.
func TestClusterRotateKeyOnlyAlone(t *testing.T) {
	testenv.RequireFUSE(t)
	etcd := testenv.StartEtcd(t)
	root := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := keyfile.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	node := func(name string) Config {
		return clusterConfig(t, etcd.Endpoints(), name, 5*time.Second, root, keyFile)
	}
	cfg1 := node("n1")
	d1 := startDaemon(t, cfg1)
	if err := testenv.PluginCall(d1.plugin, "/VolumeDriver.Create", map[string]any{"Name": "vol"}, nil); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, node("n2"))
	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	if err := keyfile.GenerateKeyFile(newKeyFile); err != nil {
		t.Fatal(err)
	}
	rotate := func() (*RotateKeyResult, error) {
		return RotateKey(context.Background(), RotateConfig{StateDir: cfg1.StateDir, NewKeyFile: newKeyFile, Keys: cfg1.Keys})
	}
	if _, err := rotate(); !errors.Is(err, cluster.ErrOthersLive) || !contains(err, "n2") {
		t.Fatalf("rotation with n2 live: %v, want ErrOthersLive naming n2", err)
	}
	d2.stop()
	res, err := rotate()
	if err != nil || res.Rewrapped != 1 {
		t.Fatalf("rotation with n1 alone: %+v, %v; want the one folder re-wrapped", res, err)
	}
	d1.stop()
	before, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotate(); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("offline rotation of a cluster node: %v, want ErrBadRequest", err)
	}
	if after, _ := os.ReadFile(keyFile); string(after) != string(before) {
		t.Fatal("the refused offline rotation changed the key file")
	}
}

// clusterConfig is testConfig for the node name of a cluster on the etcd
// at endpoints, with its folders under root and the master key in keyFile.
func clusterConfig(t *testing.T, endpoints []string, name string, ttl time.Duration, root, keyFile string) Config {
	cfg := testConfig(t)
	cfg.Cluster = cluster.Config{Endpoints: endpoints, NodeName: name, LeaseTTL: ttl}
	cfg.ClusterRoot = root
	cfg.Keys.KeyFile = keyFile
	return cfg
}
