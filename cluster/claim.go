package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/securevol/securevol/backing"
)

// Mount modes a claim records.
const (
	ModeReadWrite = "rw"
	ModeReadOnly  = "ro"
)

// Holder is what a claim key holds: who has the volume, how (through
// which view, for a read claim), and since when.
type Holder struct {
	Node  string    `json:"node"`
	Mode  string    `json:"mode"`
	View  string    `json:"view,omitempty"`
	Since time.Time `json:"since"`
}

func (h Holder) String() string {
	s := "node " + h.Node
	if h.View != "" {
		s += " through the view " + h.View
	}
	return s + " since " + h.Since.UTC().Format(time.RFC3339)
}

// HeldError is ErrHeld with the holders: the writer, or the readers.
type HeldError struct {
	Volume  string
	Holders []Holder
	Waited  time.Duration
}

func (e *HeldError) Error() string {
	how := "read-write"
	if len(e.Holders) > 0 && e.Holders[0].Mode == ModeReadOnly {
		how = "read-only"
	}
	on := make([]string, len(e.Holders))
	for i, h := range e.Holders {
		on[i] = h.String()
	}
	return fmt.Sprintf("volume %s is mounted %s on %s; waited %v for it", e.Volume, how, strings.Join(on, ", "),
		e.Waited.Round(100*time.Millisecond))
}

func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Nodes are the names of the holders' nodes, each once, in order.
func (e *HeldError) Nodes() []string {
	var out []string
	for _, h := range e.Holders {
		if !slices.Contains(out, h.Node) {
			out = append(out, h.Node)
		}
	}
	return out
}

// The claim keys: a volume's write claim, and under its readers prefix
// one read claim per view and node.
func claimKey(volume string) string      { return prefix + "mounts/" + volume }
func readersPrefix(volume string) string { return prefix + "readers/" + volume + "/" }
func readerKey(volume, view, node string) string {
	return readersPrefix(volume) + view + "/" + node
}

// Claim is this node's hold on a volume: while its lease lives, no other
// node can claim the volume (a write claim), or write it (a read claim).
// Its Fence trips when the lease is lost.
type Claim struct {
	n   *Node
	key string
	ep  *epoch
}

// Fence is the fence of the claim's lease.
func (c *Claim) Fence() *backing.Fence { return c.ep.fence }

// Claim claims volume for writing on this node, waiting up to wait while
// another node holds it or any node reads it (a watch on their keys: the
// claim is tried again the moment one goes). After wait the error is a
// *HeldError naming the writer or the readers.
func (n *Node) Claim(volume string, wait time.Duration) (*Claim, error) {
	key, readers := claimKey(volume), readersPrefix(volume)
	return n.claim(volume, key, wait, Holder{Mode: ModeReadWrite},
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(readers), "=", 0).WithPrefix(),
		},
		[]clientv3.Op{clientv3.OpGet(key), clientv3.OpGet(readers, clientv3.WithPrefix())},
		key, readers)
}

// ReadClaim claims volume for reading through view on this node: many
// nodes may read at once, but none while a node holds the volume's write
// claim. It waits up to wait for the writer to let go; after wait the
// error is a *HeldError naming it.
func (n *Node) ReadClaim(volume, view string, wait time.Duration) (*Claim, error) {
	wkey := claimKey(volume)
	return n.claim(volume, readerKey(volume, view, n.cfg.NodeName), wait, Holder{Mode: ModeReadOnly, View: view},
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(wkey), "=", 0)},
		[]clientv3.Op{clientv3.OpGet(wkey)},
		wkey)
}

// claim puts key (holding h) under the node's lease once every condition
// holds, checked in the same transaction; otherwise it reads the holders
// with orElse and waits for a deletion under one of the watched keys (a
// key ending in "/" stands for its prefix).
func (n *Node) claim(volume, key string, wait time.Duration, h Holder, conds []clientv3.Cmp, orElse []clientv3.Op, watched ...string) (*Claim, error) {
	ep, err := n.epoch()
	if err != nil {
		return nil, err
	}
	h.Node, h.Since = n.cfg.NodeName, time.Now().UTC()
	val, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait+opTimeout)
	defer cancel()
	waitCtx, cancelWait := context.WithTimeout(ctx, wait)
	defer cancelWait()
	for {
		resp, err := n.cli.Txn(ctx).If(conds...).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(ep.lease))).
			Else(orElse...).Commit()
		if err != nil {
			return nil, fmt.Errorf("claiming volume %s: %w", volume, unavailable(err))
		}
		if resp.Succeeded {
			return &Claim{n: n, key: key, ep: ep}, nil
		}
		var holders []Holder
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				if string(kv.Key) == key && clientv3.LeaseID(kv.Lease) == ep.lease {
					return &Claim{n: n, key: key, ep: ep}, nil // ours already
				}
				var h Holder
				if err := json.Unmarshal(kv.Value, &h); err != nil {
					h = Holder{Node: "(unreadable claim " + string(kv.Key) + ")"}
				}
				holders = append(holders, h)
			}
		}
		if len(holders) == 0 {
			continue // gone meanwhile
		}
		if !n.waitDelete(waitCtx, resp.Header.Revision, watched...) {
			return nil, &HeldError{Volume: volume, Holders: holders, Waited: time.Since(start)}
		}
	}
}

// waitDelete waits until one of keys (a key ending in "/" stands for its
// prefix) is deleted after revision rev, or ctx ends.
func (n *Node) waitDelete(ctx context.Context, rev int64, keys ...string) bool {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	res := make(chan bool, len(keys))
	for _, k := range keys {
		opts := []clientv3.OpOption{clientv3.WithRev(rev + 1), clientv3.WithFilterPut()}
		if strings.HasSuffix(k, "/") {
			opts = append(opts, clientv3.WithPrefix())
		}
		wch := n.cli.Watch(wctx, k, opts...)
		go func() { res <- deleted(ctx, wch) }()
	}
	return <-res
}

// deleted reports whether wch sees a deletion before ctx ends.
func deleted(ctx context.Context, wch clientv3.WatchChan) bool {
	for wr := range wch {
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

// Readers are the nodes that read volume through view now.
func (n *Node) Readers(volume, view string) ([]Holder, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := n.cli.Get(ctx, readersPrefix(volume)+view+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("readers of %s: %w", volume, unavailable(err))
	}
	out := make([]Holder, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h Holder
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			h = Holder{Node: "(unreadable claim " + string(kv.Key) + ")"}
		}
		out = append(out, h)
	}
	return out, nil
}

// Release lets go of the claim, unless it is no longer ours (its lease
// lost: then another node may hold the volume, and its key stays).
func (c *Claim) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := c.n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(c.key), "=", c.ep.lease)).
		Then(clientv3.OpDelete(c.key)).Commit()
	if err != nil {
		return fmt.Errorf("releasing %s: %w", c.key, unavailable(err))
	}
	return nil
}
