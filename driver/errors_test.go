package driver

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/store"
)

// Every refusal belongs to its class, and no message names a command-line
// flag: hints about securevol's own command line are the command's.
func TestErrorClasses(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LockWait = 100 * time.Millisecond })
	e.create("vol", map[string]string{"uid": "5"})
	e.create("busy", nil)
	used := e.record("busy")
	used.Mounts = map[string]int{"m1": 1}
	if err := e.st.Update(func(tx *store.Tx) error { return tx.Put(used) }); err != nil {
		t.Fatal(err)
	}
	held, err := e.d.lock("held")
	if err != nil {
		t.Fatal(err)
	}
	defer held.unlock()

	cases := []struct {
		name  string
		call  func() error
		class error
	}{
		{"Get unknown", func() error { _, err := e.d.Get(&volume.GetRequest{Name: "nope"}); return err }, ErrNotFound},
		{"Path unknown", func() error { _, err := e.d.Path(&volume.PathRequest{Name: "nope"}); return err }, ErrNotFound},
		{"Mount unknown", func() error { _, err := e.d.Mount(&volume.MountRequest{Name: "nope", ID: "m"}); return err }, ErrNotFound},
		{"Remove unknown", func() error { return e.d.Remove(&volume.RemoveRequest{Name: "nope"}) }, ErrNotFound},
		{"Get bad name", func() error { _, err := e.d.Get(&volume.GetRequest{Name: "../x"}); return err }, ErrInvalid},
		{"Create bad name", func() error { return e.d.Create(&volume.CreateRequest{Name: "a/b"}) }, ErrInvalid},
		{"Create bad option", func() error {
			return e.d.Create(&volume.CreateRequest{Name: "new", Options: map[string]string{"password": "x"}})
		}, ErrInvalid},
		{"Create other options", func() error {
			return e.d.Create(&volume.CreateRequest{Name: "vol", Options: map[string]string{"uid": "6"}})
		}, ErrConflict},
		{"Remove in use", func() error { return e.d.Remove(&volume.RemoveRequest{Name: "busy"}) }, ErrConflict},
		{"Mount locked", func() error { _, err := e.d.Mount(&volume.MountRequest{Name: "held", ID: "m"}); return err }, ErrUnavailable},
	}
	flag := regexp.MustCompile(`(^|\s)--?[a-z]`)
	for _, c := range cases {
		err := c.call()
		if !errors.Is(err, c.class) {
			t.Errorf("%s = %v, want class %v", c.name, err, c.class)
			continue
		}
		for _, other := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable} {
			if other != c.class && errors.Is(err, other) {
				t.Errorf("%s = %v is also of class %v", c.name, err, other)
			}
		}
		if flag.MatchString(err.Error()) {
			t.Errorf("%s names a command-line flag: %v", c.name, err)
		}
	}
	// The engine reads "no such volume" as "not mine".
	if _, err := e.d.Get(&volume.GetRequest{Name: "nope"}); !strings.Contains(err.Error(), "no such volume") {
		t.Errorf("Get unknown = %v", err)
	}

	e.close()
	e.open()
	e.d.Close()
	_, err = e.d.Mount(&volume.MountRequest{Name: "vol", ID: "m"})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Mount after Close = %v, want class unavailable", err)
	}
}
