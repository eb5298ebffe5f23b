package driver

import (
	"os"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

func TestCreateRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		opts map[string]string
		want string
	}{
		{"../etc", nil, "invalid volume name"},
		{"a/b", nil, "invalid volume name"},
		{"..", nil, "invalid volume name"},
		{"x", nil, "invalid volume name"},
		{"", nil, "empty"},
		{strings.Repeat("a", 256), nil, "at most 255"},
		{"ok1", map[string]string{"color": "1G"}, "unknown option \"color\" (valid options: gid, mode, readonly-of, size, uid)"},
		{"ok2", map[string]string{"password": "hunter2"}, "looks like a secret"},
		{"ok3", map[string]string{"uid": "-1"}, "invalid uid"},
		{"ok4", map[string]string{"mode": "999"}, "invalid mode"},
		{"ok5", map[string]string{"gid": "4294967295"}, "invalid gid"},
	}
	for _, c := range cases {
		err := e.d.Create(&volume.CreateRequest{Name: c.name, Options: c.opts})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%.20q, %v) = %v, want %q", c.name, c.opts, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes a secret option value: %v", err)
		}
	}
	if list, _ := e.d.List(); len(list.Volumes) != 0 {
		t.Fatalf("bad creates left volumes: %+v", list.Volumes)
	}
	if ents, _ := os.ReadDir(e.d.volDir); len(ents) != 0 {
		t.Fatalf("bad creates left folders: %v", ents)
	}
}

// Hostile names and options are refused with clear errors; none reaches the disk.
func TestHostileInput(t *testing.T) {
	e := newEnv(t)
	names := []string{"", "a", "..", "../x", "a/b", "/abs", "a\x00b", "vol\n", "ü-vol", "vol ume",
		strings.Repeat("a", 256), ".hidden", "-dash", "a\\b"}
	for _, n := range names {
		if err := e.d.Create(&volume.CreateRequest{Name: n}); err == nil {
			t.Errorf("Create(%q) accepted", n)
		}
		if _, err := e.d.Get(&volume.GetRequest{Name: n}); err == nil {
			t.Errorf("Get(%q) answered", n)
		}
	}
	if err := e.d.Create(&volume.CreateRequest{Name: strings.Repeat("a", 255)}); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	for _, o := range []map[string]string{
		{"uid": "-1"}, {"uid": "4294967295"}, {"uid": "1e3"}, {"uid": "0x10"}, {"uid": "+1"},
		{"gid": "99999999999"}, {"mode": "7777a"}, {"mode": "17777"}, {"mode": "-1"}, {"mode": "0x1ff"},
		{"mode": "9"}, {"": "1"}, {"UID": "1"}, {"password": "hunter2"},
	} {
		err := e.d.Create(&volume.CreateRequest{Name: "opts", Options: o})
		if err == nil {
			t.Errorf("options %v accepted", o)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes an option value: %v", err)
		}
	}
	for _, ok := range []map[string]string{{"mode": "7777"}, {"mode": "0o777"}, {"mode": " 0750 "}, {"uid": "4294967294"}} {
		if _, err := ParseOptions(ok); err != nil {
			t.Errorf("options %v: %v", ok, err)
		}
	}
	ents, _ := os.ReadDir(e.d.volDir)
	if len(ents) != 1 {
		t.Fatalf("%d folders after hostile creates, want 1", len(ents))
	}
	// A huge mount ID is only a map key.
	if err := e.d.Unmount(&volume.UnmountRequest{Name: strings.Repeat("a", 255), ID: strings.Repeat("x", 60000)}); err != nil {
		t.Fatal(err)
	}
}
