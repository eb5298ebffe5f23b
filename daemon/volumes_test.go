package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/internal/testenv"
)

// A stale reference is released through the admin socket, after which the
// engine's Remove succeeds; with a grace period the removed volume is
// listed, comes back with Undelete, and keeps its files.
func TestClientReleaseRemovedUndelete(t *testing.T) {
	testenv.RequireFUSE(t)
	cfg := testConfig(t)
	cfg.RemoveGrace = time.Hour
	d := startDaemon(t, cfg)
	d.must("/VolumeDriver.Create", map[string]any{"Name": "data"})
	d.must("/VolumeDriver.Mount", map[string]string{"Name": "data", "ID": "lost"})
	mp := filepath.Join(cfg.MountRoot, "data")
	if err := os.WriteFile(filepath.Join(mp, "kept"), []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.call("/VolumeDriver.Remove", map[string]string{"Name": "data"}); err == nil {
		t.Fatal("Remove of a referenced volume succeeded")
	}

	c, err := Dial(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Release(ctx, "data", "other"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Release of an unknown mount ID: %v", err)
	}
	if _, err := c.Release(ctx, "nosuch", ""); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Release of an unknown volume: %v", err)
	}
	n, err := c.Release(ctx, "data", "lost")
	if err != nil || n != 1 {
		t.Fatalf("Release: %d, %v", n, err)
	}
	d.must("/VolumeDriver.Remove", map[string]string{"Name": "data"})
	if err := d.call("/VolumeDriver.Get", map[string]string{"Name": "data"}); err == nil {
		t.Fatal("a removed volume is still visible to the engine")
	}

	removed, err := c.Removed(ctx)
	if err != nil || len(removed) != 1 || removed[0].Name != "data" || removed[0].PurgeAt.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("Removed: %+v, %v", removed, err)
	}
	if err := c.Undelete(ctx, "nosuch", ""); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Undelete of an unknown name: %v", err)
	}
	if err := c.Undelete(ctx, "data", ""); err != nil {
		t.Fatal(err)
	}
	d.must("/VolumeDriver.Get", map[string]string{"Name": "data"})
	d.must("/VolumeDriver.Mount", map[string]string{"Name": "data", "ID": "back"})
	if b, err := os.ReadFile(filepath.Join(mp, "kept")); err != nil || string(b) != "still here" {
		t.Fatalf("after undelete: %q, %v", b, err)
	}
	if removed, err := c.Removed(ctx); err != nil || len(removed) != 0 {
		t.Fatalf("Removed after undelete: %+v, %v", removed, err)
	}
}
