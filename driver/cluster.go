package driver

import (
	"errors"
	"maps"
	"strings"
	"time"

	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/store"
)

// Cluster mode (Config.Cluster): the records live in etcd (the Store is
// kept there), the backing folders on storage every node reaches, and a
// volume is mounted on one node at a time. A mount claims the volume
// first (cluster.Node.Claim), waiting for another node's claim to go, and
// its FUSE mount carries the claim's fence; the last unmount lets go.
//
// Mount references stay on the node, in memory: they are the local
// engine's mount IDs, they mean nothing to another node, and they end with
// the daemon anyway, whose restart revokes its previous lease (its mounts
// died with it). The records in etcd never carry them.

func (d *Driver) clustered() bool { return d.cfg.Cluster != nil }

// claim takes the cluster claim on the volume, waiting up to wait for
// another node to let go.
func (v *vol) claim(wait time.Duration) (*cluster.Claim, error) {
	return claimed(v.d.cfg.Cluster.Claim(v.name, wait))
}

// readClaim takes the cluster read claim on the view's source, waiting up
// to the mount wait for its writer to let go.
func (v *vol) readClaim() (*cluster.Claim, error) {
	d := v.d
	return claimed(d.cfg.Cluster.ReadClaim(v.rec.View.Of, v.name, d.cfg.Cluster.MountWait()))
}

// claimed classes the error of a claim.
func claimed(c *cluster.Claim, err error) (*cluster.Claim, error) {
	var held *cluster.HeldError
	switch {
	case errors.As(err, &held):
		return nil, classed(ErrConflict, "%w; stop the containers or service tasks that use it there, or, if %s is down, try again once its lease has expired", err, strings.Join(held.Nodes(), ", "))
	case err != nil:
		return nil, classed(ErrUnavailable, "cluster: %w", err)
	}
	return c, nil
}

// withRefs puts this node's references on rec, in cluster mode.
func (d *Driver) withRefs(rec *store.Volume) {
	if !d.clustered() {
		return
	}
	d.mu.Lock()
	rec.Mounts = maps.Clone(d.refs[rec.Name])
	d.mu.Unlock()
}

// saveRefs records the references of the volume: in its record on a
// single host, in memory in cluster mode.
func (v *vol) saveRefs() error {
	d := v.d
	if !d.clustered() {
		return v.save()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(v.rec.Mounts) == 0 {
		delete(d.refs, v.name)
	} else {
		d.refs[v.name] = maps.Clone(v.rec.Mounts)
	}
	return nil
}
