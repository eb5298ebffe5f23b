package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

// Loss of the database: every volume comes back from its folder's header,
// with its options and creation time.
func TestRebuildFromFolders(t *testing.T) {
	e := newEnv(t)
	e.create("alpha", map[string]string{"uid": "1000", "mode": "0700", "size": "64M"})
	e.create("beta", nil)
	want := map[string]*store.Volume{"alpha": e.record("alpha"), "beta": e.record("beta")}
	e.close()
	if err := os.Remove(filepath.Join(e.stateDir, "securevol.db")); err != nil {
		t.Fatal(err)
	}
	rep := e.open()
	if strings.Join(rep.Recovered, ",") != "alpha,beta" || rep.Volumes != 2 || len(rep.Problems) != 0 {
		t.Fatalf("start report %+v", rep)
	}
	for name, w := range want {
		got := e.record(name)
		if got.ID != w.ID || got.Options != w.Options || !got.CreatedAt.Equal(w.CreatedAt) {
			t.Errorf("%s: rebuilt %+v, want %+v", name, got, w)
		}
	}
	// Idempotent: a second start recovers nothing more.
	e.close()
	if rep := e.open(); len(rep.Recovered) != 0 || rep.Volumes != 2 {
		t.Fatalf("second start %+v", rep)
	}
}

func TestStartReportsAndCleans(t *testing.T) {
	e := newEnv(t)
	e.create("kept", nil)
	e.create("lost", nil)
	lost := e.record("lost")
	e.close()
	// A record whose folder vanished is reported, and kept.
	if err := os.RemoveAll(filepath.Join(e.stateDir, "volumes", lost.ID)); err != nil {
		t.Fatal(err)
	}
	// A create cut short before its header: deleted.
	vols := filepath.Join(e.stateDir, "volumes")
	os.MkdirAll(filepath.Join(vols, "cutshort"), 0o700)
	os.WriteFile(filepath.Join(vols, "cutshort", crypto.DirIVName), make([]byte, 16), 0o444)
	// A keyless folder with data: reported, kept.
	os.MkdirAll(filepath.Join(vols, "keyless"), 0o700)
	os.WriteFile(filepath.Join(vols, "keyless", "c2VjcmV0"), []byte("ciphertext"), 0o600)

	rep := e.open()
	if len(rep.Problems) != 2 {
		t.Fatalf("problems %q", rep.Problems)
	}
	if _, err := os.Stat(filepath.Join(vols, "cutshort")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty cut-short folder kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vols, "keyless", "c2VjcmV0")); err != nil {
		t.Errorf("keyless folder with data deleted: %v", err)
	}
	g, err := e.d.Get(&volume.GetRequest{Name: "lost"})
	if err != nil || !strings.Contains(g.Volume.Status["state"].(string), "missing") {
		t.Fatalf("Get(lost) = %+v, %v", g, err)
	}
	if _, err := e.d.Mount(&volume.MountRequest{Name: "lost", ID: "m"}); err == nil {
		t.Fatal("Mount of a volume without folder succeeded")
	}
	if v := e.record("lost"); len(v.Mounts) != 0 {
		t.Fatalf("failed Mount left a reference: %+v", v.Mounts)
	}
}

// --mount-root may be a shared directory (/mnt): Start detaches the stale
// mounts securevol left there, never someone else's mount.
func TestStartLeavesForeignMounts(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	foreign := filepath.Join(e.mountRoot, "backup")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(foreign, unix.MNT_DETACH) })
	e.close()
	rep := e.open()
	if !mounted(t, foreign) {
		t.Fatalf("start detached a mount that is not securevol's (report %+v)", rep)
	}
	if rep.StaleMounts != 0 {
		t.Fatalf("start report %+v", rep)
	}
}

// Restart with references: a clean shutdown unmounts everything but keeps
// the references, and the next start mounts those volumes again.
func TestRestartRemountsReferencedVolumes(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("used", nil)
	e.create("idle", nil)
	mp := e.mount("used", "c1")
	os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600)
	e.mount("idle", "c2")
	e.unmount("idle", "c2")
	e.close()
	if mounted(t, mp) {
		t.Fatal("Close left a mount")
	}
	rep := e.open()
	if rep.Remounted != 1 || !mounted(t, mp) || mounted(t, filepath.Join(e.mountRoot, "idle")) {
		t.Fatalf("start report %+v", rep)
	}
	if v := e.record("used"); v.Mounts["c1"] != 1 {
		t.Fatalf("references after restart %v", v.Mounts)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read after restart: %q %v", b, err)
	}
}

// A mount left behind by a server that went away without unmounting (here:
// a driver abandoned without Close) is detached at the next start and the
// volume is mounted again.
func TestStartDetachesStaleMounts(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("vol", nil)
	mp := e.mount("vol", "c1")
	old := e.d
	e.st.Close()
	e.d, e.st = nil, nil
	rep := e.open()
	if rep.StaleMounts != 1 || rep.Remounted != 1 || !mounted(t, mp) {
		t.Fatalf("start report %+v", rep)
	}
	if n := mountsAt(t, mp); n != 1 {
		t.Fatalf("%d mounts stacked at %s", n, mp)
	}
	// The abandoned driver's server ends once its mount is detached.
	for i := 0; old.Mounted() != 0; i++ {
		if i > 2000 {
			t.Fatal("the abandoned FUSE server did not end")
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
}
