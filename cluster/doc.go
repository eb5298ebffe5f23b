// Package cluster lets several securevol daemons share one set of
// volumes: their backing folders on shared storage, their records and the
// ownership of their mounts in etcd, under the key prefix /securevol/.
//
// Each daemon is a Node: an etcd client and a lease with a TTL that it
// keeps alive. A node that mounts a volume first Claims it: a key per
// volume, created only if absent and bound to the node's lease, so a node
// that dies lets go of its volumes when its lease expires. A node that
// loses its lease (a partition, a pause longer than the TTL) trips the
// Fence of every claim made under it: its mounts stop writing at once,
// before another node may take over (see backing.Fence).
//
// The records go through store.Backend (Records), so the driver keeps the
// same rules on etcd as on bbolt. The package knows nothing of Docker.
package cluster
