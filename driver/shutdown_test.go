package driver

import (
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// SIGTERM while a Mount is in flight: Close must not return while that Mount
// can still leave a live mount behind.
func TestCloseWaitsForInFlightMount(t *testing.T) {
	g := newGatedMounter()
	e := newEnv(t, func(c *Config) { c.Mounter = g.mount })
	e.create("vol", nil)
	mounted := make(chan error, 1)
	go func() {
		_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "c1"})
		mounted <- err
	}()
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- e.d.Close() }()
	time.Sleep(50 * time.Millisecond)
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	<-mounted
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.made {
		if !m.unmounted() {
			t.Fatal("a Mount in flight during Close left a live mount behind")
		}
	}
	if e.d.Mounted() != 0 {
		t.Fatalf("%d volumes mounted after Close", e.d.Mounted())
	}
	// Requests after Close are refused, not served half-way.
	if _, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "c2"}); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Mount after Close = %v", err)
	}
	e.d = nil // closed already
}
