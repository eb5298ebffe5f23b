package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/store"
)

// Node is this daemon's membership of the cluster: its etcd client and
// its lease. Join makes one; Close leaves.
type Node struct {
	cfg Config
	cli *clientv3.Client
	log *logrus.Entry

	mu     sync.Mutex
	ep     *epoch // the lease claims are made under now; nil until needed
	closed bool

	stop chan struct{}
	done chan struct{}
}

// epoch is one lease of the node and the fence of the claims made under
// it. A lost lease is never renewed: the next claim takes a new one, and
// the mounts of the old one stay fenced.
type epoch struct {
	lease clientv3.LeaseID
	fence *backing.Fence
}

// margin is how much sooner than etcd the node gives up its lease: room
// for clocks that run at slightly different rates, and for the check and
// the write it lets through.
func (c Config) margin() time.Duration { return c.LeaseTTL / 5 }

func nodeKey(name string) string { return prefix + "nodes/" + name }

// Join connects to etcd and takes a lease for this node. The lease its
// name held before (this node before a restart: its mounts died with it)
// is revoked first, which lets go of every volume it claimed.
func Join(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cc, err := cfg.clientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", cfg.Endpoints, err)
	}
	n := &Node{cfg: cfg, cli: cli, log: cfg.Log, stop: make(chan struct{}), done: make(chan struct{})}
	if err := n.revokePrevious(); err != nil {
		cli.Close()
		return nil, err
	}
	if _, err := n.epoch(); err != nil {
		cli.Close()
		return nil, err
	}
	go n.keepAlive()
	return n, nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// MountWait is how long a mount waits for another node's claim.
func (n *Node) MountWait() time.Duration { return n.cfg.MountWait }

// Records is the store backend of the cluster's volume records.
func (n *Node) Records() store.Backend { return records{n.cli} }

// revokePrevious revokes the lease recorded under the node's name.
func (n *Node) revokePrevious() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := n.cli.Get(ctx, nodeKey(n.cfg.NodeName))
	if err != nil {
		return fmt.Errorf("etcd %v: %w", n.cfg.Endpoints, unavailable(err))
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	id, err := strconv.ParseInt(string(resp.Kvs[0].Value), 16, 64)
	if err != nil {
		return fmt.Errorf("node %s: unreadable lease record %q", n.cfg.NodeName, resp.Kvs[0].Value)
	}
	_, err = n.cli.Revoke(ctx, clientv3.LeaseID(id))
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoking node %s's previous lease: %w", n.cfg.NodeName, unavailable(err))
	}
	if err == nil {
		n.log.WithField("lease", fmt.Sprintf("%x", id)).Warn("revoked the lease this node held before it restarted: its mounts ended with it")
	}
	return nil
}

// epoch returns the current epoch, taking a new lease if there is none.
func (n *Node) epoch() (*epoch, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.ep != nil && !n.ep.fence.Tripped() {
		return n.ep, nil
	}
	if old := n.ep; old != nil {
		go n.lose(old, "its deadline passed without a renewal (a pause or a partition longer than the lease allows)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	start := time.Now()
	g, err := n.cli.Grant(ctx, int64(n.cfg.LeaseTTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("taking a lease: %w", unavailable(err))
	}
	ep := &epoch{lease: g.ID, fence: backing.NewFence(start.Add(time.Duration(g.TTL)*time.Second - n.cfg.margin()))}
	if _, err := n.cli.Put(ctx, nodeKey(n.cfg.NodeName), fmt.Sprintf("%x", int64(g.ID)), clientv3.WithLease(g.ID)); err != nil {
		n.cli.Revoke(ctx, g.ID)
		return nil, fmt.Errorf("recording the lease: %w", unavailable(err))
	}
	n.ep = ep
	n.log.WithFields(logrus.Fields{"lease": fmt.Sprintf("%x", int64(g.ID)), "ttl": n.cfg.LeaseTTL}).Debug("took a cluster lease")
	return ep, nil
}

// keepAlive renews the current lease every third of its TTL. Each renewal
// moves the fence's deadline to when it was sent plus the TTL granted,
// less the margin: etcd renewed it after it was sent, so etcd's expiry is
// later still. A lease etcd no longer has, or a fence already past its
// deadline (a pause, a partition), ends the epoch.
func (n *Node) keepAlive() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.mu.Lock()
		ep := n.ep
		n.mu.Unlock()
		if ep == nil {
			continue
		}
		if ep.fence.Tripped() {
			n.lose(ep, "its deadline passed without a renewal (a pause or a partition longer than the lease allows)")
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaseTTL/3)
		sent := time.Now()
		resp, err := n.cli.KeepAliveOnce(ctx, ep.lease)
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && resp.TTL <= 0:
			n.lose(ep, "etcd no longer has it (expired)")
		case err != nil:
			n.log.WithError(err).Warn("renewing the cluster lease failed; retrying")
		default:
			ep.fence.Extend(sent.Add(time.Duration(resp.TTL)*time.Second - n.cfg.margin()))
		}
	}
}

// lose ends the epoch ep: its fence trips, so its mounts stop writing, and
// its lease is revoked if etcd still has it, so other nodes need not wait
// for it to expire.
func (n *Node) lose(ep *epoch, why string) {
	ep.fence.Trip()
	n.mu.Lock()
	if n.ep == ep {
		n.ep = nil
	}
	n.mu.Unlock()
	n.log.WithField("lease", fmt.Sprintf("%x", int64(ep.lease))).Warnf("lost the cluster lease: %s; the volumes mounted under it are fenced (EIO) until unmounted", why)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	n.cli.Revoke(ctx, ep.lease)
}

// Close revokes the node's lease, letting go of every volume it holds,
// and disconnects.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ep := n.ep
	n.mu.Unlock()
	close(n.stop)
	<-n.done
	if ep != nil {
		ep.fence.Trip()
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := n.cli.Revoke(ctx, ep.lease)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			n.log.WithError(err).Warn("revoking the cluster lease at shutdown; other nodes wait for it to expire")
		}
	}
	return n.cli.Close()
}
