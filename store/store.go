// Package store keeps securevol's volume metadata in one bbolt file.
//
// The database is an index and a place for reference counts, not the only
// copy of anything that matters: every backing folder carries a header that
// names its volume (crypto.Header.Labels), so a lost database can be rebuilt
// from the folders. Reference counts, which exist nowhere else, are written
// in their own fsynced transaction before the driver answers the engine.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketVolumes = []byte("volumes") // name → JSON Volume
	bucketMeta    = []byte("meta")    // small daemon-wide facts (schema, KDF parameters)
	keySchema     = []byte("schema")
)

// SchemaVersion is recorded in the meta bucket. A database written by a
// newer securevol is refused rather than misread.
const SchemaVersion = 1

// ErrNotFound is returned by Tx.Get for a name the store does not hold.
var ErrNotFound = errors.New("no such volume")

// ErrLocked means another process (usually a running `securevol serve`)
// holds the database.
var ErrLocked = errors.New("database is in use by another securevol process")

// Options are a volume's options (see driver.ParseOptions): the owner and
// permissions of its root directory, and its size limit.
type Options struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode uint32 `json:"mode"` // permission bits (and setgid/sticky), e.g. 0o755
	// Size is the most the volume's backing folder may hold, in bytes
	// (cryptfs.Quota says what counts); 0 means no limit.
	Size int64 `json:"size,omitempty"`
}

// Volume is one volume's record.
type Volume struct {
	ID        string    `json:"id"` // backing folder name under <state-dir>/volumes
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Options   Options   `json:"options"`
	// Mounts counts, per mount ID, the Mount calls not yet matched by an
	// Unmount. The engine balances them: docker cp into a running
	// container sends Mount and then Unmount again with the container's
	// mount ID (seen with Debian's docker.io 20.10), so one ID can hold
	// more than one reference. The volume is in use while Mounts is not
	// empty.
	Mounts map[string]int `json:"mounts,omitempty"`
	// Removing is set before the volume's key is destroyed, so a Remove cut
	// short by a crash is finished at the next start instead of leaving a
	// record whose folder can no longer be opened.
	Removing bool `json:"removing,omitempty"`
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the database at path. If another process
// holds it, Open fails with ErrLocked after lockWait.
func Open(path string, lockWait time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if lockWait <= 0 {
		lockWait = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w (if the file is damaged, move it aside and start with --rebuild)", path, err)
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketVolumes); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, []byte(fmt.Sprint(SchemaVersion)))
		}
		if string(v) != fmt.Sprint(SchemaVersion) {
			return fmt.Errorf("database schema %s is not supported by this securevol (supports %d)", v, SchemaVersion)
		}
		return nil
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Update runs fn in a read-write transaction, committed (and fsynced) if fn
// returns nil and rolled back otherwise.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Tx is a transaction. It is only valid inside the View or Update closure.
type Tx struct {
	tx *bolt.Tx
}

// Get returns the volume called name, or ErrNotFound.
func (t *Tx) Get(name string) (*Volume, error) {
	b := t.tx.Bucket(bucketVolumes).Get([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return decode(name, b)
}

func decode(name string, b []byte) (*Volume, error) {
	v := &Volume{}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("volume %s: damaged record: %w", name, err)
	}
	return v, nil
}

// Put stores v under v.Name, replacing any record of that name.
func (t *Tx) Put(v *Volume) error {
	if v.Name == "" || v.ID == "" {
		return errors.New("put: volume without name or ID")
	}
	if len(v.Mounts) == 0 {
		v.Mounts = nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("put %s: %w", v.Name, err)
	}
	return t.tx.Bucket(bucketVolumes).Put([]byte(v.Name), b)
}

// Delete removes the record of name; deleting a missing name is not an error.
func (t *Tx) Delete(name string) error {
	return t.tx.Bucket(bucketVolumes).Delete([]byte(name))
}

// ForEach calls fn for every volume in name order, stopping at its first
// error. A damaged record stops the walk with an error naming it.
func (t *Tx) ForEach(fn func(*Volume) error) error {
	return t.tx.Bucket(bucketVolumes).ForEach(func(k, b []byte) error {
		v, err := decode(string(k), b)
		if err != nil {
			return err
		}
		return fn(v)
	})
}

// Count is the number of volumes.
func (t *Tx) Count() int {
	n := 0
	c := t.tx.Bucket(bucketVolumes).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// Meta returns the daemon-wide value stored under key (nil if none).
func (t *Tx) Meta(key string) []byte {
	v := t.tx.Bucket(bucketMeta).Get([]byte(key))
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

// SetMeta stores a daemon-wide, non-secret value.
func (t *Tx) SetMeta(key string, value []byte) error {
	if key == string(keySchema) {
		return errors.New("meta key \"schema\" is reserved")
	}
	return t.tx.Bucket(bucketMeta).Put([]byte(key), value)
}

// List returns every volume, in name order.
func (s *Store) List() ([]*Volume, error) {
	var out []*Volume
	err := s.View(func(tx *Tx) error {
		return tx.ForEach(func(v *Volume) error { out = append(out, v); return nil })
	})
	return out, err
}

// Get returns one volume (ErrNotFound if none).
func (s *Store) Get(name string) (*Volume, error) {
	var v *Volume
	err := s.View(func(tx *Tx) (err error) { v, err = tx.Get(name); return })
	return v, err
}
