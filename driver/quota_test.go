package driver

import (
	"github.com/securevol/securevol/internal/testenv"

	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"
)

// TestSizeOption: -o size= takes go-units' binary sizes and refuses the
// rest with a message that does not repeat the value.
func TestSizeOption(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  string
	}{
		{"10G", 10 << 30, ""},
		{"10g", 10 << 30, ""},
		{"10GiB", 10 << 30, ""},
		{"10gb", 10 << 30, ""},
		{"512M", 512 << 20, ""},
		{"1.5g", 3 << 29, ""},
		{" 2T ", 2 << 40, ""},
		{"1048576", 1 << 20, ""},
		{"1M", 1 << 20, ""},
		{"1023k", 0, "at least 1.0 MiB"},
		{"10", 0, "at least 1.0 MiB"},
		{"0", 0, "at least 1.0 MiB"},
		{"99999999999P", 0, "below 8 EiB"},
		{"-5G", 0, "invalid size: give a number"},
		{"10X", 0, "invalid size: give a number"},
		{"10 GB of it", 0, "invalid size: give a number"},
		{"lots", 0, "invalid size: give a number"},
		{"", 0, "invalid size: give a number"},
	}
	for _, c := range cases {
		o, err := ParseOptions(map[string]string{"size": c.in})
		switch {
		case c.err == "" && (err != nil || o.Size != c.want):
			t.Errorf("size=%q: %d, %v; want %d", c.in, o.Size, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("size=%q: %v, want an error with %q", c.in, err, c.err)
		case err != nil && len(strings.TrimSpace(c.in)) > 2 && strings.Contains(err.Error(), strings.TrimSpace(c.in)):
			t.Errorf("size=%q: the error repeats the value: %v", c.in, err)
		}
	}
}

// TestSizeLimit: a volume created with a size is limited when mounted,
// shows limit and use in Status, and keeps its limit across a driver
// restart; re-creating it with another size is refused.
func TestSizeLimit(t *testing.T) {
	testenv.RequireFUSE(t)
	e := newEnv(t)
	e.create("small", map[string]string{"size": "4M"})
	if err := e.d.Create(&volume.CreateRequest{Name: "small", Options: map[string]string{"size": "4096k"}}); err != nil {
		t.Fatalf("re-create with the same size spelled otherwise: %v", err)
	}
	err := e.d.Create(&volume.CreateRequest{Name: "small", Options: map[string]string{"size": "8M"}})
	if err == nil || !strings.Contains(err.Error(), "size=4194304") {
		t.Fatalf("re-create with another size: %v", err)
	}

	e.create("open", nil)
	if _, ok := e.d.LimitBytes("open"); ok {
		t.Error("LimitBytes has a limit for a volume without one")
	}
	if used, ok := e.d.UsedBytes("open"); !ok || used <= 0 {
		t.Errorf("UsedBytes of an unmounted volume: %d, %v", used, ok)
	}

	mp := e.mount("small", "c1")
	fillVolume(t, mp, 4<<20)
	e.requireStatus("small", 4<<20, 3<<20, true)
	if lim, ok := e.d.LimitBytes("small"); !ok || lim != 4<<20 {
		t.Errorf("LimitBytes: %d, %v", lim, ok)
	}
	if used, ok := e.d.UsedBytes("small"); !ok || used < 3<<20 || used > 4<<20 {
		t.Errorf("UsedBytes of the full volume: %d, %v", used, ok)
	}

	// Restart: the record keeps the size, the mount enforces it again.
	e.close()
	e.open()
	if got := e.record("small").Options.Size; got != 4<<20 {
		t.Fatalf("after restart the record says size %d", got)
	}
	if err := os.WriteFile(filepath.Join(mp, "more"), make([]byte, 1<<20), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write after restart on a full volume: %v, want ENOSPC", err)
	}
	e.requireStatus("small", 4<<20, 3<<20, true)
	if err := os.Remove(filepath.Join(mp, "fill")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "more"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatalf("write after delete: %v", err)
	}
	e.unmount("small", "c1")
	e.requireStatus("small", 4<<20, 1<<20, false)
}

// fillVolume writes to a file in the mounted volume at mp until ENOSPC,
// which must come near the limit; df must show the limit.
func fillVolume(t *testing.T, mp string, limit int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(mp, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	for err == nil {
		var k int
		k, err = f.Write(make([]byte, 64<<10))
		n += int64(k)
	}
	if !errors.Is(err, syscall.ENOSPC) || n > limit || n < limit*9/10 {
		t.Fatalf("filled with %d bytes: %v, want ENOSPC near %d", n, err, limit)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Frsize; size != limit {
		t.Fatalf("df shows size %d, want %d", size, limit)
	}
}

// requireStatus checks the size facts of Status: the limit, and a use
// from minUsed up to the limit.
func (e *env) requireStatus(name string, limit, minUsed int64, mounted bool) {
	e.t.Helper()
	res, err := e.d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	st := res.Volume.Status
	used, _ := st["backing_bytes"].(int64)
	if st["size_limit_bytes"] != limit || st["size_limit"] != humanBytes(limit) || used < minUsed || used > limit || st["mounted"] != mounted {
		e.t.Fatalf("Status %v, want size_limit_bytes %d, backing_bytes from %d up to it, mounted %v", st, limit, minUsed, mounted)
	}
}

// TestDefaultSize: a volume created without a size option takes the
// daemon's default limit; an explicit size wins; a volume keeps the limit
// it was made with when the default changes, and re-creating it without
// options is still a no-op.
func TestDefaultSize(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultSize = 2 << 20 })
	e.create("plain", nil)
	e.create("sized", map[string]string{"size": "4M"})
	for name, want := range map[string]int64{"plain": 2 << 20, "sized": 4 << 20} {
		if got, ok := e.d.LimitBytes(name); !ok || got != want {
			t.Errorf("%s: limit %d (%v), want %d", name, got, ok, want)
		}
	}
	e.close()
	e.open(func(c *Config) { c.DefaultSize = 8 << 20 })
	if err := e.d.Create(&volume.CreateRequest{Name: "plain"}); err != nil {
		t.Fatalf("re-create after the default changed: %v", err)
	}
	if got, _ := e.d.LimitBytes("plain"); got != 2<<20 {
		t.Errorf("plain's limit changed with the default: %d", got)
	}
	if err := e.d.Create(&volume.CreateRequest{Name: "plain", Options: map[string]string{"size": "8M"}}); !errors.Is(err, ErrConflict) {
		t.Errorf("re-create with an explicit other size: %v, want a conflict", err)
	}
	e.create("later", nil)
	if got, _ := e.d.LimitBytes("later"); got != 8<<20 {
		t.Errorf("later: limit %d, want the new default", got)
	}
}
