package store

import (
	bolt "go.etcd.io/bbolt"
)

// Backend keeps the store's buckets: named sets of key-value pairs. bbolt
// is the one of a single host (Open); a cluster keeps them in etcd
// (package cluster). The store's records and rules are the same on
// either.
type Backend interface {
	// Read runs fn in a read-only transaction that sees one consistent
	// state.
	Read(fn func(Txn) error) error
	// Write runs fn in a serializable read-write transaction, committed
	// durably if fn returns nil and discarded otherwise. fn may run more
	// than once (a backend that retries on a conflict), so it must not
	// keep effects outside the transaction between runs.
	Write(fn func(Txn) error) error
	Close() error
}

// Txn is one transaction of a Backend. Buckets exist from the start; keys
// and bucket names are never empty.
type Txn interface {
	// Get returns the value of key in bucket, nil if there is none. The
	// slice is valid only inside the transaction.
	Get(bucket, key []byte) ([]byte, error)
	Put(bucket, key, value []byte) error
	// Delete removes key; a missing key is no error.
	Delete(bucket, key []byte) error
	// ForEach calls fn for every pair of bucket in key order, stopping at
	// fn's first error. fn must not change the bucket.
	ForEach(bucket []byte, fn func(k, v []byte) error) error
	// Count is the number of keys in bucket.
	Count(bucket []byte) (int, error)
}

// buckets are the store's buckets, all made when a bbolt file is opened.
var buckets = [][]byte{bucketVolumes, bucketRemoved, bucketQuarantine, bucketMeta}

// boltBackend is the bbolt file of a single host.
type boltBackend struct{ db *bolt.DB }

func (b boltBackend) init() error {
	return b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b boltBackend) Read(fn func(Txn) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

func (b boltBackend) Write(fn func(Txn) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

func (b boltBackend) Close() error { return b.db.Close() }

type boltTxn struct{ tx *bolt.Tx }

func (t boltTxn) Get(bucket, key []byte) ([]byte, error) { return t.tx.Bucket(bucket).Get(key), nil }

func (t boltTxn) Put(bucket, key, value []byte) error { return t.tx.Bucket(bucket).Put(key, value) }

func (t boltTxn) Delete(bucket, key []byte) error { return t.tx.Bucket(bucket).Delete(key) }

func (t boltTxn) ForEach(bucket []byte, fn func(k, v []byte) error) error {
	return t.tx.Bucket(bucket).ForEach(fn)
}

func (t boltTxn) Count(bucket []byte) (int, error) {
	n := 0
	c := t.tx.Bucket(bucket).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n, nil
}
