package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/store"
)

// The whole life of the daemon: first start (key generated), volumes
// created and mounted, data fsynced, kill -9, restart that keeps every
// volume, reference and byte, then a clean SIGTERM.
func TestServeCrashAndRestart(t *testing.T) {
	testenv.RequireFUSE(t)
	d := newServeProc(t, buildServeBinary(t))
	d.start()

	// First start made a key, 0600, and said where it sits.
	if fi, err := os.Stat(d.keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if !strings.Contains(d.logs.String(), "generated a new master key") {
		t.Error("no warning about the generated key")
	}
	for p, mode := range map[string]os.FileMode{d.sock: 0o660, filepath.Join(d.stateDir, "admin.sock"): 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != mode || fi.Mode()&os.ModeSocket == 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v %v, want socket %v owned by root", p, fi.Mode(), err, mode)
		}
	}

	// docker volume create: Get says no such volume, then Create.
	if _, err := d.get("alpha"); err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("Get before Create: %v", err)
	}
	for _, n := range []string{"alpha", "beta", "gamma"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n, "Opts": map[string]string{"uid": "1000"}}, nil)
	}
	a := d.mount("alpha", "c1")
	d.mount("alpha", "c2")
	// docker cp: Mount again with c1's ID, then Unmount.
	d.mount("alpha", "c1")
	d.must("/VolumeDriver.Unmount", map[string]string{"Name": "alpha", "ID": "c1"}, nil)
	d.mount("alpha", "c1") // a docker cp under way when the daemon dies
	b := d.mount("beta", "c3")
	d.mount("gamma", "c4")
	d.must("/VolumeDriver.Unmount", map[string]string{"Name": "gamma", "ID": "c4"}, nil)

	payload := bytes.Repeat([]byte("fsynced bytes survive kill -9. "), 5000)
	writeSynced(t, filepath.Join(a, "data.bin"), payload)
	os.MkdirAll(filepath.Join(b, "dir", "sub"), 0o755)
	writeSynced(t, filepath.Join(b, "dir", "sub", "note.txt"), []byte("beta note"))

	d.kill()
	// The dead server's mounts answer "transport endpoint is not connected".
	if _, err := os.Stat(filepath.Join(a, "data.bin")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9, stat in the mount: %v, want ENOTCONN", err)
	}
	if len(mountsBelow(d.mountRoot)) != 2 {
		t.Fatalf("after kill -9: mounts %v", mountsBelow(d.mountRoot))
	}
	start := time.Now()
	d.start()
	t.Logf("restart to listening: %v", time.Since(start))
	if logs := d.logs.String(); !strings.Contains(logs, "remounted=2") || !strings.Contains(logs, "stale_mounts=2") {
		t.Errorf("restart did not report 2 stale mounts detached and 2 volumes mounted again")
	}

	if vols := d.list(); len(vols) != 3 {
		t.Fatalf("List after restart: %+v", vols)
	}
	for name, want := range map[string]float64{"alpha": 3, "beta": 1, "gamma": 0} {
		v, err := d.get(name)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status["mounts"] != want || (want > 0) != (v.Mountpoint != "") {
			t.Errorf("%s after restart: mounts %v mountpoint %q", name, v.Status["mounts"], v.Mountpoint)
		}
	}
	if mps := mountsBelow(d.mountRoot); len(mps) != 2 {
		t.Fatalf("after restart: mounts %v (stale ones must be gone, referenced ones back)", mps)
	}
	if got, err := os.ReadFile(filepath.Join(a, "data.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("alpha's fsynced file after kill -9: %d bytes, %v", len(got), err)
	}
	if got, err := os.ReadFile(filepath.Join(b, "dir", "sub", "note.txt")); err != nil || string(got) != "beta note" {
		t.Fatalf("beta's file after kill -9: %q %v", got, err)
	}
	// The references are the ones from before the crash: c1 twice, c2 once.
	for _, id := range []string{"c1", "c2", "c1"} {
		if len(mountsBelow(d.mountRoot)) != 2 {
			t.Fatalf("alpha unmounted before its last reference (%s)", id)
		}
		d.must("/VolumeDriver.Unmount", map[string]string{"Name": "alpha", "ID": id}, nil)
	}
	if len(mountsBelow(d.mountRoot)) != 1 {
		t.Fatalf("alpha still mounted after its last Unmount: %v", mountsBelow(d.mountRoot))
	}

	// Keys never reach the log.
	raw, _ := os.ReadFile(d.keyFile)
	if logs := d.logs.String(); strings.Contains(logs, hex.EncodeToString(raw)) || strings.Contains(logs, string(raw)) {
		t.Fatal("the master key appears in the log")
	}

	d.stop()
	if _, err := os.Stat(d.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
	if mps := mountsBelow(d.mountRoot); len(mps) != 0 {
		t.Errorf("mounts left after SIGTERM: %v", mps)
	}
	// The database was closed (its lock is free) and kept beta's reference.
	st, err := store.Open(dbFile(d.stateDir), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.Get("beta")
	st.Close()
	if err != nil || v.Mounts["c3"] != 1 {
		t.Fatalf("beta's reference after SIGTERM: %+v %v", v, err)
	}
}

// Loss of the database, then --rebuild: every volume comes back from its
// folder, data included.
func TestServeRebuild(t *testing.T) {
	testenv.RequireFUSE(t)
	d := newServeProc(t, buildServeBinary(t))
	d.start()
	for _, n := range []string{"one", "two"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n, "Opts": map[string]string{"mode": "0700"}}, nil)
	}
	mp := d.mount("one", "c1")
	writeSynced(t, filepath.Join(mp, "keep"), []byte("kept"))
	d.must("/VolumeDriver.Unmount", map[string]string{"Name": "one", "ID": "c1"}, nil)
	before, _ := d.get("one")
	d.stop()

	// Damage the database beyond use; serve refuses it and names the way out.
	if err := os.WriteFile(dbFile(d.stateDir), []byte("garbage, not a bolt file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.tryStart(); err == nil || !strings.Contains(err.Error(), "--rebuild") {
		t.Fatalf("start on a damaged database: %v", err)
	}
	d.start("--rebuild")
	if vols := d.list(); len(vols) != 2 {
		t.Fatalf("after rebuild: %+v", vols)
	}
	after, err := d.get("one")
	if err != nil || after.CreatedAt != before.CreatedAt || after.Status["root"] != "uid=0 gid=0 mode=0700" {
		t.Fatalf("rebuilt volume %+v (before %+v) %v", after, before, err)
	}
	mp = d.mount("one", "c2")
	if b, err := os.ReadFile(filepath.Join(mp, "keep")); err != nil || string(b) != "kept" {
		t.Fatalf("data after rebuild: %q %v", b, err)
	}
	aside, _ := filepath.Glob(dbFile(d.stateDir) + ".before-rebuild-*")
	if len(aside) != 1 {
		t.Fatalf("old database not kept aside: %v", aside)
	}
}

// Key rotation through the running daemon, then offline: afterwards the
// old key opens nothing and the data is intact.
func TestServeKeyRotation(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)
	d := newServeProc(t, bin)
	d.start()
	for _, n := range []string{"r1", "r2"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n}, nil)
	}
	mp := d.mount("r1", "c1")
	writeSynced(t, filepath.Join(mp, "f"), []byte("before rotation"))
	oldKey, _ := keyfile.LoadKeyFile(d.keyFile)
	newKeyFile := filepath.Join(d.dir, "new.key")
	if err := keyfile.GenerateKeyFile(newKeyFile); err != nil {
		t.Fatal(err)
	}
	newKey, _ := keyfile.LoadKeyFile(newKeyFile)

	out, err := exec.Command(bin, "key", "rotate", "--new-key-file", newKeyFile, "--key-file", d.keyFile, "--state-dir", d.stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "re-wrapped by the running daemon") {
		t.Fatalf("key rotate: %v\n%s", err, out)
	}
	if k, err := keyfile.LoadKeyFile(d.keyFile); err != nil || !k.Equal(newKey) {
		t.Fatalf("key file after rotation: %v", err)
	}
	folders, _ := filepath.Glob(filepath.Join(d.stateDir, "volumes", "*"))
	if len(folders) != 2 {
		t.Fatalf("folders %v", folders)
	}
	for _, f := range folders {
		if _, err := openVolume(f, crypto.StaticKey{Key: oldKey}); !errors.Is(err, crypto.ErrWrongKey) {
			t.Errorf("%s: old key after rotation: %v", f, err)
		}
	}
	// Live mounts keep working; new mounts open with the new key.
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "before rotation" {
		t.Fatalf("read during rotation: %q %v", b, err)
	}
	mp2 := d.mount("r2", "c2")
	writeSynced(t, filepath.Join(mp2, "g"), []byte("after"))
	d.stop()

	// Offline: the daemon is down, the command does the work itself.
	third := filepath.Join(d.dir, "third.key")
	keyfile.GenerateKeyFile(third)
	out, err = exec.Command(bin, "key", "rotate", "--new-key-file", third, "--key-file", d.keyFile, "--state-dir", d.stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 volumes re-wrapped") {
		t.Fatalf("offline key rotate: %v\n%s", err, out)
	}
	d.start()
	for _, v := range []struct{ name, file, want string }{{"r1", "f", "before rotation"}, {"r2", "g", "after"}} {
		res, err := d.get(v.name)
		if err != nil || res.Mountpoint == "" {
			t.Fatalf("%s not mounted again after offline rotation: %+v %v", v.name, res, err)
		}
		if b, err := os.ReadFile(filepath.Join(res.Mountpoint, v.file)); err != nil || string(b) != v.want {
			t.Fatalf("%s after offline rotation: %q %v", v.name, b, err)
		}
	}
}

// A rotation cut short (new key written beside the old, some folders
// re-wrapped) is finished by the next start.
func TestServeFinishesInterruptedRotation(t *testing.T) {
	testenv.RequireFUSE(t)
	d := newServeProc(t, buildServeBinary(t))
	d.start()
	for _, n := range []string{"i1", "i2"} {
		d.must("/VolumeDriver.Create", map[string]any{"Name": n}, nil)
	}
	d.stop()
	oldKey, _ := keyfile.LoadKeyFile(d.keyFile)
	pending := d.keyFile + ".new"
	keyfile.GenerateKeyFile(pending)
	newKey, _ := keyfile.LoadKeyFile(pending)
	folders, _ := filepath.Glob(filepath.Join(d.stateDir, "volumes", "*"))
	// Only the first folder made it before the "crash".
	if err := backing.WithRoot(folders[0], func(root *backing.Dir) error {
		return backing.Rewrap(root, crypto.StaticKey{Key: oldKey}, crypto.StaticKey{Key: newKey})
	}); err != nil {
		t.Fatal(err)
	}
	d.start()
	for i := 0; ; i++ {
		if _, err := os.Stat(pending); errors.Is(err, os.ErrNotExist) {
			break
		}
		if i > 500 {
			t.Fatal("the interrupted rotation was not finished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range folders {
		if _, err := openVolume(f, crypto.StaticKey{Key: newKey}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, n := range []string{"i1", "i2"} {
		d.mount(n, "c")
	}
}

func TestServeRefusals(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)
	d := newServeProc(t, bin)
	d.start()
	d.must("/VolumeDriver.Create", map[string]any{"Name": "v1"}, nil)

	// A second daemon on the same state dir.
	d2 := newServeProc(t, bin)
	d2.stateDir, d2.keyFile, d2.mountRoot = d.stateDir, d.keyFile, d.mountRoot
	if err := d2.tryStart(); err == nil || !strings.Contains(err.Error(), "another securevol daemon uses this state dir") {
		t.Fatalf("second daemon: %v", err)
	}
	// Rotation to a key file that others can read.
	loose := filepath.Join(d.dir, "loose.key")
	keyfile.GenerateKeyFile(loose)
	os.Chmod(loose, 0o644)
	out, err := exec.Command(bin, "key", "rotate", "--new-key-file", loose, "--state-dir", d.stateDir, "--key-file", d.keyFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "chmod 600") {
		t.Fatalf("rotate to a world-readable key: %v %s", err, out)
	}
	d.kill()

	// The key file went missing but volumes exist: no new key is made.
	os.Rename(d.keyFile, d.keyFile+".moved")
	if err := d.tryStart(); err == nil || !strings.Contains(err.Error(), "key file missing, but") {
		t.Fatalf("start without the key: %v", err)
	}
	if _, err := os.Stat(d.keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new key was generated beside existing volumes")
	}
	os.Rename(d.keyFile+".moved", d.keyFile)
	// The stale socket the kill left is replaced.
	d.start()
	if _, err := d.get("v1"); err != nil {
		t.Fatal(err)
	}
}

// The passphrase and key-command sources, and the env variables.
func TestServeKeySources(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildServeBinary(t)

	t.Run("passphrase", func(t *testing.T) {
		d := newServeProc(t, bin)
		pf := filepath.Join(d.dir, "pass")
		os.WriteFile(pf, []byte("correct horse battery staple\n"), 0o600)
		d.extra = []string{"--passphrase-file", pf}
		d.start()
		d.must("/VolumeDriver.Create", map[string]any{"Name": "p1"}, nil)
		mp := d.mount("p1", "c")
		writeSynced(t, filepath.Join(mp, "f"), []byte("pp"))
		d.stop()
		// The same passphrase opens it again (same stored salt) ...
		d.start()
		v, err := d.get("p1")
		if err != nil || v.Status["kdf"] != "argon2id" || v.Mountpoint == "" {
			t.Fatalf("after restart: %+v %v", v, err)
		}
		d.stop()
		// ... a wrong one does not.
		os.WriteFile(pf, []byte("wrong\n"), 0o600)
		d.start()
		if v, _ := d.get("p1"); v == nil || !strings.Contains(fmt.Sprint(v.Status["state"]), "does not open") {
			t.Fatalf("wrong passphrase: %+v", v)
		}
	})

	t.Run("key-command-env", func(t *testing.T) {
		d := newServeProc(t, bin)
		k := bytes.Repeat([]byte{0xab}, 32)
		script := filepath.Join(d.dir, "getkey")
		os.WriteFile(script, []byte("#!/bin/sh\necho "+hex.EncodeToString(k)+"\n"), 0o700)
		d.extra = []string{"--key-command", script}
		d.start()
		d.must("/VolumeDriver.Create", map[string]any{"Name": "k1"}, nil)
		d.stop()
		mk, _ := crypto.NewMasterKey(k)
		folders, _ := filepath.Glob(filepath.Join(d.stateDir, "volumes", "*"))
		if len(folders) != 1 {
			t.Fatal(folders)
		}
		if _, err := openVolume(folders[0], crypto.StaticKey{Key: mk}); err != nil {
			t.Fatalf("volume not under the command's key: %v", err)
		}
		if strings.Contains(d.logs.String(), hex.EncodeToString(k)) {
			t.Fatal("key in the log")
		}
		// Flags from the environment.
		d.extra = nil
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), "SECUREVOL_SOCKET="+d.sock, "SECUREVOL_STATE_DIR="+d.stateDir, "SECUREVOL_MOUNT_ROOT="+d.mountRoot,
			"SECUREVOL_KEY_COMMAND="+script, "SECUREVOL_LOG_FORMAT=json")
		var logs testenv.SyncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
		for i := 0; ; i++ {
			if _, err := d.get("k1"); err == nil {
				break
			}
			if i > 500 {
				t.Fatalf("serve configured by env did not answer:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if line, _, _ := strings.Cut(logs.String(), "\n"); !json.Valid([]byte(line)) {
			t.Fatalf("SECUREVOL_LOG_FORMAT=json, log line %q", line)
		}
	})
}

// Info and debug lines go to stdout and warnings to stderr, each line
// whole, so the engine (which logs a managed plugin's stderr as errors)
// and journald keep the levels.
func TestServeLogStreams(t *testing.T) {
	d := newServeProc(t, buildServeBinary(t))
	d.start()
	d.must("/VolumeDriver.Create", map[string]any{"Name": "logs"}, nil)
	d.stop()
	for _, tc := range []struct {
		name       string
		got        string
		want, not  []string
		wantLevels string
	}{
		{"stdout", d.stdout.String(), []string{"securevol ready", "created volume", "level=debug", "stopped"}, []string{"generated a new master key"}, "info debug"},
		{"stderr", d.stderr.String(), []string{"generated a new master key"}, []string{"securevol ready", "level=info", "level=debug"}, "warning error"},
	} {
		for _, w := range tc.want {
			if !strings.Contains(tc.got, w) {
				t.Errorf("%s lacks %q:\n%s", tc.name, w, tc.got)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(tc.got, n) {
				t.Errorf("%s holds %q:\n%s", tc.name, n, tc.got)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(tc.got), "\n") {
			lvl := ""
			if _, rest, ok := strings.Cut(line, " level="); ok {
				lvl, _, _ = strings.Cut(rest, " ")
			}
			if !strings.HasPrefix(line, "time=") || lvl == "" || !strings.Contains(tc.wantLevels, lvl) {
				t.Errorf("%s: line %q", tc.name, line)
			}
		}
	}
}

// The systemd unit's NoNewPrivileges=yes leaves serve able to mount: it
// makes its FUSE mounts with mount(2), no setuid helper.
func TestServeNoNewPrivileges(t *testing.T) {
	testenv.RequireFUSE(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.Missing(t, "no setpriv (Debian package util-linux)")
	}
	wrapper := filepath.Join(t.TempDir(), "securevol-nnp")
	body := "#!/bin/sh\nexec " + setpriv + " --no-new-privs " + buildServeBinary(t) + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	d := newServeProc(t, wrapper)
	d.start()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil || !strings.Contains(string(status), "NoNewPrivs:\t1") {
		t.Fatalf("serve does not run with no_new_privs: %v", err)
	}
	d.must("/VolumeDriver.Create", map[string]any{"Name": "nnp"}, nil)
	mp := d.mount("nnp", "c1")
	writeSynced(t, filepath.Join(mp, "f"), []byte("mounted without new privileges"))
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "mounted without new privileges" {
		t.Fatalf("read back: %q %v", b, err)
	}
}
