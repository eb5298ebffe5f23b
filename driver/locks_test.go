package driver

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// A request for one volume never waits on another volume's work, and a
// request for a busy volume gives up with a clear error.
func TestLocksArePerVolume(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LockWait = 200 * time.Millisecond })
	e.create("slow", nil)
	held, err := e.d.lock("slow")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.d.Create(&volume.CreateRequest{Name: "fast"}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Create of another volume waited for a held lock")
	}
	// Reads take no lock at all.
	if _, err := e.d.Get(&volume.GetRequest{Name: "slow"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.d.Mount(&volume.MountRequest{Name: "slow", ID: "m"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "try again") {
		t.Fatalf("Mount of a locked volume = %v", err)
	}
	held.unlock()
	if n := e.tracked(); n != 0 {
		t.Fatalf("%d lock entries linger", n)
	}
}

func TestLocksExclude(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LockWait = 10 * time.Second })
	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := e.d.lock("v")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxInside = max(maxInside, inside)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			inside--
			mu.Unlock()
			v.unlock()
		}()
	}
	wg.Wait()
	if maxInside != 1 || e.tracked() != 0 {
		t.Fatalf("max holders %d, entries left %d", maxInside, e.tracked())
	}
}
