package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/attacktest"
	"github.com/securevol/securevol/internal/testenv"
)

// The header attacks of issue 7 against the real daemon: a volume's
// securevol.conf replaced by a symlink to /dev/zero (endless), a 100 MiB
// sparse file, a FIFO or a symlink to a secret. Get, Mount and a restart
// must each answer within 5 s, the daemon must neither die nor swell, and
// nothing it answers or logs may quote the target.
//
// The daemon runs under an address-space limit (daemonMemLimitKB): reading
// /dev/zero to its end would otherwise take the machine's memory before
// the test could stop it.

// daemonMemLimitKB is the daemon's virtual memory limit (ulimit -v): an
// idle daemon maps about 750 MB, mostly reserved and never touched.
const daemonMemLimitKB = 1536 << 10

// daemonRSSLimit is the most resident memory the daemon may use after
// answering about a planted header (an idle one uses about 15 MB).
const daemonRSSLimit = 64 << 20

// attackSecret is in every file a planted header points to.
const attackSecret = "SECRET-MARKER-d41e"

// limitedBinary returns a script that runs bin under daemonMemLimitKB.
func limitedBinary(t *testing.T, bin string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "securevol-limited")
	script := fmt.Sprintf("#!/bin/sh\nulimit -v %d || exit 111\nexec %s \"$@\"\n", daemonMemLimitKB, bin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAttackDaemonHeader(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := limitedBinary(t, buildServeBinary(t))
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, conf, host string) error
	}{
		{"symlink-dev-zero", func(t *testing.T, conf, _ string) error { return os.Symlink("/dev/zero", conf) }},
		{"sparse-100MiB", func(t *testing.T, conf, _ string) error {
			if err := os.WriteFile(conf, nil, 0o400); err != nil {
				return err
			}
			return os.Truncate(conf, 100<<20)
		}},
		{"fifo", func(t *testing.T, conf, _ string) error { return unix.Mkfifo(conf, 0o400) }},
		{"symlink-secret-json", func(t *testing.T, conf, host string) error {
			secret := filepath.Join(host, "secret.json")
			if err := os.WriteFile(secret, []byte(`{"format":1,"id":"`+attackSecret+`"}`), 0o600); err != nil {
				return err
			}
			return os.Symlink(secret, conf)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newServeProc(t, bin)
			d.start()
			d.must("/VolumeDriver.Create", map[string]any{"Name": "victim"}, nil)
			conf := filepath.Join(volumeFolder(t, d), crypto.HeaderName)
			if err := os.Remove(conf); err != nil {
				t.Fatal(err)
			}
			if err := tc.plant(t, conf, t.TempDir()); err != nil {
				t.Fatal(err)
			}
			runDaemonHeaderAttack(t, d, conf)
		})
	}
}

// volumeFolder is the backing folder of the daemon's only volume.
func volumeFolder(t *testing.T, d *serveProc) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.stateDir, "volumes"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("volume folders: %v %v", ents, err)
	}
	return filepath.Join(d.stateDir, "volumes", ents[0].Name())
}

func runDaemonHeaderAttack(t *testing.T, d *serveProc, conf string) {
	var shown []string // every text the planted bytes could reach
	var got *volInfo
	getOp := attacktest.Start(func() (err error) { got, err = d.get("victim"); return err })
	mountOp := attacktest.Start(func() error {
		return d.call("/VolumeDriver.Mount", map[string]string{"Name": "victim", "ID": "c1"}, nil)
	})
	t.Cleanup(func() { attacktest.UnblockUntil([]*attacktest.Op{getOp, mountOp}, conf) })
	getErr, mountErr := getOp.Wait(), mountOp.Wait()
	t.Logf("Get: %v; Mount: %v", getErr, mountErr)
	switch {
	case getErr == attacktest.ErrHung:
		t.Error("Get hung")
	case getErr != nil:
		t.Errorf("Get failed (did the daemon die?): %v", getErr)
	default:
		shown = append(shown, fmt.Sprint(got.Status))
		if got.Status["state"] == "ok" {
			t.Errorf("Get: state ok with a planted header: %v", got.Status)
		}
	}
	switch {
	case mountErr == attacktest.ErrHung:
		t.Error("Mount hung")
	case mountErr == nil:
		t.Error("Mount succeeded with a planted header")
	default:
		shown = append(shown, mountErr.Error())
	}
	// List reads no header: it answers unless the daemon died or is stuck.
	if err := attacktest.Within(func() error { return d.call("/VolumeDriver.List", struct{}{}, nil) }); err != nil {
		t.Errorf("the daemon no longer answers after the attack: %v", err)
	} else if rss, err := vmRSS(d.cmd.Process.Pid); err == nil && rss > daemonRSSLimit {
		t.Errorf("the daemon's resident memory grew to %d MiB (limit %d MiB)", rss>>20, daemonRSSLimit>>20)
	}

	// A restart reads every header before it listens.
	d.kill()
	startOp := attacktest.Start(func() error { return d.tryStart() })
	t.Cleanup(func() { attacktest.UnblockUntil([]*attacktest.Op{startOp}, conf) })
	switch err := startOp.Wait(); {
	case err == attacktest.ErrHung:
		t.Error("restart hung before listening")
	case err != nil:
		t.Errorf("restart failed: %v", firstLines(err.Error(), 3))
	}
	shown = append(shown, d.logs.String())
	for _, s := range shown {
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, attackSecret) {
				t.Errorf("the planted header's target is quoted: %s", line)
			}
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
