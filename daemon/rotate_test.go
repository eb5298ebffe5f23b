package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
)

// folders lists the daemon's backing folders.
func folders(t *testing.T, stateDir string) []string {
	t.Helper()
	f, err := filepath.Glob(filepath.Join(stateDir, "volumes", "*"))
	if err != nil || len(f) == 0 {
		t.Fatalf("no volume folders: %v", err)
	}
	return f
}

// An offline rotation away from a passphrase or a key command re-wraps
// every volume under the new key file, which serve then starts with; run
// again after being cut short, it finishes.
func TestRotateOfflineFromOtherSources(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "pass")
	os.WriteFile(pf, []byte("correct horse\n"), 0o600)
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i)
	}
	script := filepath.Join(dir, "getkey")
	os.WriteFile(script, []byte("#!/bin/sh\necho "+hex.EncodeToString(raw)+"\n"), 0o700)
	cmdKey, _ := crypto.NewMasterKey(raw)

	for _, tc := range []struct {
		name string
		set  func(*Config)
		old  crypto.KeySource
	}{
		{"passphrase", func(c *Config) { c.Keys.PassphraseFile = pf }, nil},
		{"key command", func(c *Config) { c.Keys.Command = script }, crypto.StaticKey{Key: cmdKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.set(&cfg)
			d := startDaemon(t, cfg)
			for _, n := range []string{"r1", "r2"} {
				d.must("/VolumeDriver.Create", map[string]any{"Name": n})
			}
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
			newKeyFile := filepath.Join(t.TempDir(), "new.key")
			if err := keyfile.GenerateKeyFile(newKeyFile); err != nil {
				t.Fatal(err)
			}
			newKey, _ := keyfile.LoadKeyFile(newKeyFile)
			fs := folders(t, cfg.StateDir)
			// An earlier run was cut short after the first folder.
			old := tc.old
			if old == nil {
				p, _ := os.ReadFile(pf)
				old, _ = crypto.NewPassphrase(p[:len(p)-1], nil)
			}
			if err := backing.WithRoot(fs[0], func(root *backing.Dir) error {
				return backing.Rewrap(root, old, crypto.StaticKey{Key: newKey})
			}); err != nil {
				t.Fatal(err)
			}

			res, err := RotateKey(context.Background(), RotateConfig{StateDir: cfg.StateDir, NewKeyFile: newKeyFile, Keys: cfg.Keys})
			if err != nil || res.Online || res.Rewrapped != 2 || res.KeyFile != newKeyFile {
				t.Fatalf("RotateKey: %+v %v", res, err)
			}
			for _, f := range fs {
				if err := opens(f, crypto.StaticKey{Key: newKey}); err != nil {
					t.Errorf("%s under the new key: %v", f, err)
				}
				if err := opens(f, old); err == nil {
					t.Errorf("%s still opens with the old key", f)
				}
			}
			// serve starts on the new key file and finds every volume.
			next := cfg
			next.Keys.PassphraseFile, next.Keys.Command, next.Keys.KeyFile = "", "", newKeyFile
			d = startDaemon(t, next)
			c, err := Dial(next.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			vols, err := c.Volumes(context.Background())
			if err != nil || len(vols) != 2 {
				t.Fatalf("Volumes: %+v %v", vols, err)
			}
			for _, v := range vols {
				if v.Status["state"] != "ok" || v.Status["master_key"] != "key file" {
					t.Errorf("%s after the rotation: %v", v.Name, v.Status)
				}
			}
		})
	}
}

// Through a running daemon the rotation is online and replaces the
// daemon's key file; offline, the new key may not be the old key's file.
func TestRotateKeyFile(t *testing.T) {
	cfg := testConfig(t)
	d := startDaemon(t, cfg)
	d.must("/VolumeDriver.Create", map[string]any{"Name": "k1"})
	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	keyfile.GenerateKeyFile(newKeyFile)
	newKey, _ := keyfile.LoadKeyFile(newKeyFile)
	res, err := RotateKey(context.Background(), RotateConfig{StateDir: cfg.StateDir, NewKeyFile: newKeyFile})
	if err != nil || !res.Online || res.Rewrapped != 1 || res.KeyFile != d.cfg.Keys.KeyFile {
		t.Fatalf("RotateKey with the daemon running: %+v %v", res, err)
	}
	if k, err := keyfile.LoadKeyFile(d.cfg.Keys.KeyFile); err != nil || !k.Equal(newKey) {
		t.Fatalf("the daemon's key file after rotation: %v", err)
	}
	if _, err := os.Stat(pendingKeyFile(d.cfg.Keys.KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending key left: %v", err)
	}
	d.stop()

	_, err = RotateKey(context.Background(), RotateConfig{StateDir: cfg.StateDir, NewKeyFile: d.cfg.Keys.KeyFile, Keys: d.cfg.Keys})
	if !errors.Is(err, ErrSameKeyFile) {
		t.Fatalf("offline rotation onto the same file: %v", err)
	}
}
