package driver

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// Undelete answers "back" only for a folder that is still the removed
// volume's: one replaced meanwhile by a copy of another volume's folder
// (its authenticated header names that volume), one whose header was
// edited, or one that is gone, is refused, and the volume stays removed
// (so Undelete can be tried again once the folder is restored).
func TestAttackUndeleteForeignFolder(t *testing.T) {
	cases := []struct {
		name   string
		damage func(e *env, dir, other string)
	}{
		{"another volume's folder copied in", func(e *env, dir, other string) {
			mustDo(t, os.RemoveAll(dir))
			if out, err := exec.Command("cp", "-a", other, dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		}},
		{"header renamed", func(e *env, dir, _ string) { editHeader(t, dir, `"name": "vol"`, `"name": "lov"`) }},
		{"folder gone", func(e *env, dir, _ string) { mustDo(t, os.RemoveAll(dir)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, withGrace(time.Hour))
			e.create("vol", nil)
			e.create("other", nil)
			id := e.record("vol").ID
			e.remove("vol")
			c.damage(e, e.d.backing(id), e.d.backing(e.record("other").ID))
			if err := e.d.Undelete("vol", ""); err == nil {
				t.Fatal("Undelete brought back a volume whose folder is not its own")
			}
			if _, err := e.d.Get(&volume.GetRequest{Name: "vol"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after a refused Undelete = %v", err)
			}
			if r := e.removed(); len(r) != 1 || r[0].ID != id {
				t.Fatalf("Removed after a refused Undelete = %+v", r)
			}
		})
	}
}
