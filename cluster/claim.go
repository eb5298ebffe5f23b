package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/securevol/securevol/backing"
)

// Mount modes a claim records.
const (
	ModeReadWrite = "rw"
)

// Holder is what a volume's claim key holds: who has the volume, how, and
// since when.
type Holder struct {
	Node  string    `json:"node"`
	Mode  string    `json:"mode"`
	Since time.Time `json:"since"`
}

// HeldError is ErrHeld with the holder.
type HeldError struct {
	Volume string
	Holder Holder
	Waited time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("volume %s is mounted (%s) on node %s since %s; waited %v for it", e.Volume, e.Holder.Mode, e.Holder.Node,
		e.Holder.Since.UTC().Format(time.RFC3339), e.Waited.Round(100*time.Millisecond))
}

func (e *HeldError) Is(target error) bool { return target == ErrHeld }

func claimKey(volume string) string { return prefix + "mounts/" + volume }

// Claim is this node's hold on a volume: while its lease lives, no other
// node can claim the volume. Its Fence trips when the lease is lost, or
// when the claim is let go of.
//
// Several claims of one volume on one node share its key (a mount that
// ended behind the driver's back, then the Mount after it): the key goes
// with the last of them (Node.held).
type Claim struct {
	n     *Node
	key   string
	ep    *epoch
	fence *backing.Fence
	// released is set by the first Release (guarded by n.claimMu).
	released bool
}

// heldKey is a claim key under one lease.
type heldKey struct {
	lease clientv3.LeaseID
	key   string
}

// Fence stops the writes made under the claim: it trips with the lease,
// and when the claim is let go of.
func (c *Claim) Fence() *backing.Fence { return c.fence }

// Claim claims volume for this node, waiting up to wait while another
// node holds it (a watch on its key: the claim is tried again the moment
// the key goes). After wait the error is a *HeldError naming the holder.
func (n *Node) Claim(volume string, wait time.Duration) (*Claim, error) {
	ep, err := n.epoch()
	if err != nil {
		return nil, err
	}
	key := claimKey(volume)
	val, err := json.Marshal(Holder{Node: n.cfg.NodeName, Mode: ModeReadWrite, Since: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait+opTimeout)
	defer cancel()
	waitCtx, cancelWait := context.WithTimeout(ctx, wait)
	defer cancelWait()
	for {
		c, resp, err := n.tryClaim(ctx, ep, key, string(val))
		if err != nil {
			return nil, fmt.Errorf("claiming volume %s: %w", volume, unavailable(err))
		}
		if c != nil {
			return c, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // gone meanwhile
		}
		var h Holder
		if err := json.Unmarshal(kvs[0].Value, &h); err != nil {
			h = Holder{Node: "(unreadable claim)"}
		}
		if !n.waitGone(waitCtx, key, resp.Header.Revision) {
			return nil, &HeldError{Volume: volume, Holder: h, Waited: time.Since(start)}
		}
	}
}

// tryClaim creates key under ep's lease, or finds it ours already, and
// counts the claim; it answers nil and etcd's answer if another lease
// holds the key. It holds claimMu, so a Release of the node's last claim
// on key cannot delete the key between finding it ours and counting.
func (n *Node) tryClaim(ctx context.Context, ep *epoch, key, val string) (*Claim, *clientv3.TxnResponse, error) {
	n.claimMu.Lock()
	defer n.claimMu.Unlock()
	resp, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(ep.lease))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, nil, err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || clientv3.LeaseID(kvs[0].Lease) != ep.lease {
			return nil, resp, nil
		}
	}
	n.held[heldKey{ep.lease, key}]++
	return &Claim{n: n, key: key, ep: ep, fence: ep.fence.Child()}, resp, nil
}

// waitGone waits until key is deleted after revision rev, or ctx ends.
func (n *Node) waitGone(ctx context.Context, key string, rev int64) bool {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range n.cli.Watch(wctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
		if wr.Err() != nil {
			// A compacted revision or a lost leader: look again.
			return ctx.Err() == nil
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return true
			}
		}
	}
	return false
}

// Release lets go of the claim: its fence trips first, so nothing written
// under it can land once another node may hold the volume. The key goes
// with the node's last claim on it, unless it is no longer ours (its
// lease lost: then another node may hold the volume, and its key stays).
func (c *Claim) Release() error {
	c.fence.Trip()
	n := c.n
	n.claimMu.Lock()
	defer n.claimMu.Unlock()
	if c.released {
		return nil
	}
	c.released = true
	hk := heldKey{c.ep.lease, c.key}
	if n.held[hk]--; n.held[hk] > 0 {
		return nil
	}
	delete(n.held, hk)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(c.key), "=", c.ep.lease)).
		Then(clientv3.OpDelete(c.key)).Commit()
	if err != nil {
		return fmt.Errorf("releasing %s: %w", c.key, unavailable(err))
	}
	return nil
}
