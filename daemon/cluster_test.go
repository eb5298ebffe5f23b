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
	cfg := testConfig(t)
	cfg.Cluster = cluster.Config{Endpoints: etcd.Endpoints(), NodeName: "n1", LeaseTTL: 5 * time.Second}
	cfg.ClusterRoot = t.TempDir()
	cfg.Keys.KeyFile = filepath.Join(t.TempDir(), "master.key")
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
