package driver

import (
	"time"
)

// Each volume has its own lock, which a request waits for with a deadline,
// so one slow volume (a FUSE unmount waiting for a busy file) never stalls
// requests for other volumes, and a request for the same volume gives up
// with a clear error before the engine's own timeout instead of hanging.

// newVol adds name's vol to d.vols. d.mu must be held.
func (d *Driver) newVol(name string) *vol {
	v := &vol{d: d, name: name, token: make(chan struct{}, 1)}
	d.vols[name] = v
	return v
}

// tidy forgets v once nothing refers to it: no request holds or waits for
// its lock, it is not mounted and has no problem to show. d.mu must be
// held.
func (d *Driver) tidy(v *vol) {
	if v.users == 0 && v.mount == nil && v.trouble == "" && d.vols[v.name] == v {
		delete(d.vols, v.name)
	}
}

// lock takes name's lock, waiting at most LockWait, and returns its vol
// with no record loaded. The caller must call its unlock.
func (d *Driver) lock(name string) (*vol, error) {
	d.mu.Lock()
	v := d.vols[name]
	if v == nil {
		v = d.newVol(name)
	}
	v.users++
	d.mu.Unlock()

	t := time.NewTimer(d.cfg.LockWait)
	defer t.Stop()
	select {
	case v.token <- struct{}{}:
		return v, nil
	case <-t.C:
		d.mu.Lock()
		v.users--
		d.tidy(v)
		d.mu.Unlock()
		return nil, classed(ErrUnavailable, "volume %s: another request has been working on it for over %v; try again later", name, d.cfg.LockWait.Round(time.Second))
	}
}

// unlock releases the lock taken by lock, and the record with it.
func (v *vol) unlock() {
	v.rec = nil
	<-v.token
	v.d.mu.Lock()
	v.users--
	v.d.tidy(v)
	v.d.mu.Unlock()
}

// lockName validates name, registers a request (see begin) and takes the
// volume's lock, loading nothing: for Create, whose volume does not exist
// yet. unlock releases both.
func (d *Driver) lockName(name string) (v *vol, unlock func(), err error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	done, err := d.begin()
	if err != nil {
		return nil, nil, err
	}
	if v, err = d.lock(name); err != nil {
		done()
		return nil, nil, err
	}
	return v, func() { v.unlock(); done() }, nil
}

// lockVolume is lockName for an existing volume: it loads its record.
func (d *Driver) lockVolume(name string) (v *vol, unlock func(), err error) {
	if v, unlock, err = d.lockName(name); err != nil {
		return nil, nil, err
	}
	if v.rec, err = d.lookup(name); err != nil {
		unlock()
		return nil, nil, err
	}
	return v, unlock, nil
}
