package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/securevol/securevol/store"
)

// records keeps the store's buckets in etcd, a bucket's key k at
// /securevol/<bucket>/<k>.
//
// A transaction reads one revision of etcd (a snapshot) and buffers its
// writes; it commits only if no other writer committed since it began,
// which every writer proves by changing the guard key. So writers are
// serialized as bbolt serializes them, across all nodes; a transaction
// that loses the race runs again on the new state. Records change rarely
// (create, remove, a purge), and mounts do not touch them, so the one
// guard costs nothing that matters.
type records struct {
	cli *clientv3.Client
}

// guardKey is changed by every transaction that writes records.
const guardKey = prefix + "records-guard"

// maxRetries bounds how often a transaction runs again after losing a
// race: each loss means another writer committed, so it is progress.
const maxRetries = 100

var _ store.Backend = records{}

func bucketPrefix(bucket []byte) string { return prefix + string(bucket) + "/" }

func (r records) Read(fn func(store.Txn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t, err := r.begin(ctx)
	if err != nil {
		return err
	}
	return fn(t)
}

func (r records) Write(fn func(store.Txn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for range maxRetries {
		t, err := r.begin(ctx)
		if err != nil {
			return err
		}
		t.writes = map[string][]byte{}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.writes) == 0 {
			return nil
		}
		ops := []clientv3.Op{clientv3.OpPut(guardKey, "")}
		for _, k := range slices.Sorted(maps.Keys(t.writes)) {
			if v := t.writes[k]; v != nil {
				ops = append(ops, clientv3.OpPut(k, string(v)))
			} else {
				ops = append(ops, clientv3.OpDelete(k))
			}
		}
		resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(guardKey), "=", t.guard)).Then(ops...).Commit()
		if err != nil {
			return unavailable(err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("records: %d conflicting writers in a row; try again", maxRetries)
}

// Close does nothing: the Node owns the client.
func (r records) Close() error { return nil }

// begin starts a transaction at etcd's current revision.
func (r records) begin(ctx context.Context) (*txn, error) {
	resp, err := r.cli.Get(ctx, guardKey)
	if err != nil {
		return nil, unavailable(err)
	}
	t := &txn{ctx: ctx, cli: r.cli, rev: resp.Header.Revision}
	if len(resp.Kvs) > 0 {
		t.guard = resp.Kvs[0].ModRevision
	}
	return t, nil
}

// unavailable marks an error of the etcd client.
func unavailable(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("etcd: %w", err)
}

// txn is one transaction: reads at rev, writes buffered (a nil value
// deletes) and seen by its own later reads.
type txn struct {
	ctx    context.Context
	cli    *clientv3.Client
	rev    int64
	guard  int64 // the guard key's ModRevision at rev (0: none yet)
	writes map[string][]byte
}

func (t *txn) Get(bucket, key []byte) ([]byte, error) {
	k := bucketPrefix(bucket) + string(key)
	if v, ok := t.writes[k]; ok {
		return v, nil
	}
	resp, err := t.cli.Get(t.ctx, k, clientv3.WithRev(t.rev))
	if err != nil {
		return nil, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

func (t *txn) Put(bucket, key, value []byte) error {
	if t.writes == nil {
		return errors.New("records: write in a read-only transaction")
	}
	t.writes[bucketPrefix(bucket)+string(key)] = append([]byte{}, value...)
	return nil
}

func (t *txn) Delete(bucket, key []byte) error {
	if t.writes == nil {
		return errors.New("records: write in a read-only transaction")
	}
	t.writes[bucketPrefix(bucket)+string(key)] = nil
	return nil
}

// all is bucket at rev with the transaction's own writes applied, by key.
func (t *txn) all(bucket []byte) (map[string][]byte, error) {
	p := bucketPrefix(bucket)
	resp, err := t.cli.Get(t.ctx, p, clientv3.WithPrefix(), clientv3.WithRev(t.rev))
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), p)] = kv.Value
	}
	for k, v := range t.writes {
		if name, ok := strings.CutPrefix(k, p); ok {
			if v == nil {
				delete(out, name)
			} else {
				out[name] = v
			}
		}
	}
	return out, nil
}

func (t *txn) ForEach(bucket []byte, fn func(k, v []byte) error) error {
	all, err := t.all(bucket)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		if err := fn([]byte(k), all[k]); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) Count(bucket []byte) (int, error) {
	all, err := t.all(bucket)
	return len(all), err
}

// Alone fails with ErrOthersLive, naming them, if other nodes of the
// cluster are live (hold a lease): what must not happen under them, such
// as a rebuild of the records or a change of the master key, checks it.
func (n *Node) Alone() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	nodes, err := n.cli.Get(ctx, nodeKey(""), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return unavailable(err)
	}
	var others []string
	for _, kv := range nodes.Kvs {
		if name := strings.TrimPrefix(string(kv.Key), nodeKey("")); name != n.cfg.NodeName {
			others = append(others, name)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("%w: %s", ErrOthersLive, strings.Join(others, ", "))
	}
	return nil
}

// ClearRecords deletes the volume records (live and removed), so that
// start-up rebuilds them from the folders' headers: the cluster's
// --rebuild. Mount claims, nodes and daemon-wide facts stay. It is
// refused (ErrOthersLive) while another node is live: that node's
// volumes would vanish under it until the rebuild adds them back.
func (n *Node) ClearRecords() error {
	if err := n.Alone(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := n.cli.Txn(ctx).Then(
		clientv3.OpDelete(bucketPrefix([]byte("volumes")), clientv3.WithPrefix()),
		clientv3.OpDelete(bucketPrefix([]byte("removed")), clientv3.WithPrefix()),
		clientv3.OpPut(guardKey, ""),
	).Commit()
	if err != nil {
		return unavailable(err)
	}
	return nil
}
