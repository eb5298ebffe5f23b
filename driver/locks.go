package driver

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// errBusy is returned when a volume's lock could not be had in time.
var errBusy = errors.New("busy")

// nameLocks are per-volume mutexes that can be waited for with a deadline,
// so one slow volume (a FUSE unmount waiting for a busy file) never stalls
// requests for other volumes, and a request for the same volume gives up
// with a clear error before the engine's own timeout instead of hanging.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	ch    chan struct{} // holds one token while locked
	users int           // holders and waiters; the entry is dropped at zero
}

func newNameLocks() *nameLocks { return &nameLocks{m: map[string]*nameLock{}} }

// lock takes name's lock, waiting at most wait. The returned func unlocks.
func (l *nameLocks) lock(name string, wait time.Duration) (func(), error) {
	l.mu.Lock()
	e := l.m[name]
	if e == nil {
		e = &nameLock{ch: make(chan struct{}, 1)}
		l.m[name] = e
	}
	e.users++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		e.users--
		if e.users == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-t.C:
		release()
		return nil, fmt.Errorf("volume %s: another request has been working on it for over %v; try again later: %w", name, wait.Round(time.Second), errBusy)
	}
}

// size is the number of names with a holder or waiter (for tests).
func (l *nameLocks) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
