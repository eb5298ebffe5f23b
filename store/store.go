// Package store keeps securevol's volume metadata: in one bbolt file on a
// single host (Open), or in any other Backend (New), such as etcd in a
// cluster.
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
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketVolumes    = []byte("volumes")    // name → JSON Volume
	bucketRemoved    = []byte("removed")    // volume ID → JSON Volume removed within its grace period
	bucketQuarantine = []byte("quarantine") // bucket/key@time → JSON Quarantined
	bucketMeta       = []byte("meta")       // small daemon-wide facts (schema, KDF parameters)
	keySchema        = []byte("schema")
)

// SchemaVersion is recorded in the meta bucket. A database written by a
// newer securevol is refused rather than misread. (The removed and
// quarantine buckets came without a new version: an older securevol that
// ignores them recovers a removed volume from its folder, losing nothing.)
const SchemaVersion = 1

// The store's errors, for errors.Is.
var (
	// ErrNotFound is returned for a name (or ID) the store does not hold.
	ErrNotFound = errors.New("no such volume")
	// ErrLocked means another process (usually a running securevol
	// daemon) holds the database.
	ErrLocked = errors.New("database is in use by another securevol process")
	// ErrDamaged means the file is not a readable database. Every volume
	// can be recovered from the backing folders' headers into a new one.
	ErrDamaged = errors.New("the database file is damaged")
	// ErrBadRecord means one record cannot be read; Quarantine moves such
	// records aside, and List and ForEach skip them.
	ErrBadRecord = errors.New("damaged record")
)

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
	// DirID is the directory ID in the folder's header (crypto.Header.ID,
	// authenticated once the header opens; kept by key rotations and
	// upgrades). It binds the folder to this record where the name
	// cannot: a volume removed within its grace and the new one that took
	// its name carry the same name. Empty in records written before it
	// existed, until the folder is next opened.
	DirID string `json:"dir_id,omitempty"`
	// Mounts counts, per mount ID, the Mount calls not yet matched by an
	// Unmount. The engine balances them: docker cp into a running
	// container sends Mount and then Unmount again with the container's
	// mount ID (seen with Debian's docker.io 20.10), so one ID can hold
	// more than one reference. The volume is in use while Mounts is not
	// empty.
	Mounts map[string]int `json:"mounts,omitempty"`
	// Removing is set before the volume's key is destroyed (by a Remove,
	// or by the purge of a removed volume), so a removal cut short by a
	// crash is finished at the next start instead of leaving a record
	// whose folder can no longer be opened.
	Removing bool `json:"removing,omitempty"`
	// RemovedAt is when a removal with a grace period took the volume out
	// of sight, and PurgeAt when its key is to be destroyed. Such a record
	// lives in the removed bucket (PutRemoved), keyed by ID, so that the
	// name is free for a new volume meanwhile.
	RemovedAt time.Time `json:"removed_at,omitzero"`
	PurgeAt   time.Time `json:"purge_at,omitzero"`
	// View, if set, makes this a read-only view of another volume: a
	// record without a folder, header or key of its own (its ID names no
	// folder), which mounts the source's folder read-only. An older
	// securevol that ignores the field sees a volume whose folder is
	// missing, and removing it there deletes nothing else.
	View *View `json:"view,omitempty"`
}

// View binds a view to its source volume: to its name, and to the folder
// it had when the view was made, so that a later volume of that name is
// never served through the view.
type View struct {
	Of    string `json:"of"`     // the source volume's name
	ID    string `json:"id"`     // its folder ID
	DirID string `json:"dir_id"` // its folder's directory ID (crypto.Header.ID)
}

// check reports what makes v unfit to store or to use. The ID names a
// folder under the volumes directory, so it must be exactly one path
// component: an empty ID or ".." would make a removal shred the wrong
// folder.
func (v *Volume) check() error {
	switch {
	case v.Name == "":
		return errors.New("volume without name")
	case v.ID == "" || v.ID == "." || v.ID == ".." || strings.ContainsAny(v.ID, "/\x00"):
		return fmt.Errorf("volume %s: invalid folder ID %q", v.Name, v.ID)
	}
	return nil
}

// Quarantined is a record that could not be read, moved aside by
// Quarantine with the bytes it held.
type Quarantined struct {
	Bucket string    `json:"bucket"` // "volumes" (key: a name) or "removed" (key: an ID)
	Key    string    `json:"key"`
	At     time.Time `json:"at"`     // when it was moved aside
	Reason string    `json:"reason"` // why it could not be read
	Raw    []byte    `json:"raw"`
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	be Backend
}

// Open opens (creating if needed) the database at path. If another process
// holds it, Open fails with ErrLocked after lockWait; if the file is no
// readable database, with ErrDamaged.
func Open(path string, lockWait time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if lockWait <= 0 {
		lockWait = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, FreelistType: bolt.FreelistMapType})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("open store %s: %w (%w)", path, ErrDamaged, err)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	be := boltBackend{db}
	if err := be.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s, err := New(be)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// New returns the Store kept in be, recording the schema version in an
// empty one and refusing a newer one. On error be is closed.
func New(be Backend) (*Store, error) {
	s := &Store{be: be}
	if err := s.checkSchema(); err != nil {
		be.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) checkSchema() error {
	return s.be.Write(func(tx Txn) error {
		v, err := tx.Get(bucketMeta, keySchema)
		switch {
		case err != nil:
			return err
		case v == nil:
			return tx.Put(bucketMeta, keySchema, []byte(fmt.Sprint(SchemaVersion)))
		case string(v) != fmt.Sprint(SchemaVersion):
			return fmt.Errorf("database schema %s is not supported by this securevol (supports %d)", v, SchemaVersion)
		}
		return nil
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.be.Close() }

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.be.Read(func(tx Txn) error { return run(tx, fn) })
}

// Update runs fn in a read-write transaction, committed (and made durable)
// if fn returns nil and rolled back otherwise.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.be.Write(func(tx Txn) error { return run(tx, fn) })
}

// run runs fn over tx; a read error that a method without an error result
// (Count, Meta) met fails the transaction.
func run(tx Txn, fn func(*Tx) error) error {
	t := &Tx{tx: tx}
	if err := fn(t); err != nil {
		return err
	}
	return t.err
}

// Tx is a transaction. It is only valid inside the View or Update closure.
type Tx struct {
	tx Txn
	// err is the first error met by a method that cannot return one; the
	// transaction fails with it.
	err error
}

// Get returns the volume called name: ErrNotFound if there is none,
// ErrBadRecord if its record cannot be read.
func (t *Tx) Get(name string) (*Volume, error) {
	b, err := t.tx.Get(bucketVolumes, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if b == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return decodeVolume(name, b)
}

// decodeVolume reads the record stored under name in the volumes bucket.
func decodeVolume(name string, b []byte) (*Volume, error) {
	v, err := decode(b)
	if err == nil && v.Name != name {
		err = fmt.Errorf("record of %q stored under another name", v.Name)
	}
	if err == nil && !v.RemovedAt.IsZero() {
		err = errors.New("a removed volume's record among the live ones")
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w: %w", name, ErrBadRecord, err)
	}
	return v, nil
}

// decodeRemoved reads the record stored under id in the removed bucket.
func decodeRemoved(id string, b []byte) (*Volume, error) {
	v, err := decode(b)
	if err == nil && v.ID != id {
		err = fmt.Errorf("record of ID %q stored under another ID", v.ID)
	}
	if err == nil && v.RemovedAt.IsZero() {
		err = errors.New("a live volume's record among the removed ones")
	}
	if err != nil {
		return nil, fmt.Errorf("removed volume %s: %w: %w", id, ErrBadRecord, err)
	}
	return v, nil
}

func decode(b []byte) (*Volume, error) {
	v := &Volume{}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	return v, v.check()
}

func encode(v *Volume) ([]byte, error) {
	if err := v.check(); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if len(v.Mounts) == 0 {
		v.Mounts = nil
	}
	return json.Marshal(v)
}

// Put stores v under v.Name, replacing any record of that name.
func (t *Tx) Put(v *Volume) error {
	if !v.RemovedAt.IsZero() {
		return fmt.Errorf("put %s: the volume is removed (PutRemoved stores it)", v.Name)
	}
	b, err := encode(v)
	if err != nil {
		return err
	}
	return t.tx.Put(bucketVolumes, []byte(v.Name), b)
}

// Delete removes the record of name; deleting a missing name is not an error.
func (t *Tx) Delete(name string) error {
	return t.tx.Delete(bucketVolumes, []byte(name))
}

// ForEach calls fn for every volume in name order, stopping at its first
// error. Records that cannot be read are skipped (see Quarantine).
func (t *Tx) ForEach(fn func(*Volume) error) error {
	return t.tx.ForEach(bucketVolumes, func(k, b []byte) error {
		v, err := decodeVolume(string(k), b)
		if err != nil {
			return nil
		}
		return fn(v)
	})
}

// Count is the number of volumes.
func (t *Tx) Count() int {
	n, err := t.tx.Count(bucketVolumes)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n
}

// GetRemoved returns the removed volume with folder ID id (ErrNotFound if
// none, ErrBadRecord if its record cannot be read).
func (t *Tx) GetRemoved(id string) (*Volume, error) {
	b, err := t.tx.Get(bucketRemoved, []byte(id))
	if err != nil {
		return nil, fmt.Errorf("removed volume %s: %w", id, err)
	}
	if b == nil {
		return nil, fmt.Errorf("removed volume %s: %w", id, ErrNotFound)
	}
	return decodeRemoved(id, b)
}

// PutRemoved stores v, whose RemovedAt is set, under its ID among the
// removed volumes.
func (t *Tx) PutRemoved(v *Volume) error {
	if v.RemovedAt.IsZero() {
		return fmt.Errorf("put %s: RemovedAt is not set", v.Name)
	}
	b, err := encode(v)
	if err != nil {
		return err
	}
	return t.tx.Put(bucketRemoved, []byte(v.ID), b)
}

// DeleteRemoved removes the removed volume with ID id, if any.
func (t *Tx) DeleteRemoved(id string) error {
	return t.tx.Delete(bucketRemoved, []byte(id))
}

// ForEachRemoved calls fn for every removed volume, in ID order, stopping
// at its first error. Records that cannot be read are skipped.
func (t *Tx) ForEachRemoved(fn func(*Volume) error) error {
	return t.tx.ForEach(bucketRemoved, func(k, b []byte) error {
		v, err := decodeRemoved(string(k), b)
		if err != nil {
			return nil
		}
		return fn(v)
	})
}

// Meta returns the daemon-wide value stored under key (nil if none).
func (t *Tx) Meta(key string) []byte {
	v, err := t.tx.Get(bucketMeta, []byte(key))
	if err != nil && t.err == nil {
		t.err = err
	}
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
	return t.tx.Put(bucketMeta, []byte(key), value)
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

// Removed returns every removed volume, in ID order.
func (s *Store) Removed() ([]*Volume, error) {
	var out []*Volume
	err := s.View(func(tx *Tx) error {
		return tx.ForEachRemoved(func(v *Volume) error { out = append(out, v); return nil })
	})
	return out, err
}

// Quarantine moves every record that cannot be read, live or removed, to
// the quarantine bucket, stamped at, and returns them. So does every
// record whose name validName refuses (the caller's rule: a name also
// names a mountpoint), and every record whose folder ID another record
// claims too: the database cannot tell whose the folder is (the folder's
// header can), and removing either would destroy the other's key. Nothing
// is lost: Quarantined lists them with their bytes.
func (s *Store) Quarantine(at time.Time, validName func(string) error) ([]Quarantined, error) {
	var moved []Quarantined
	err := s.Update(func(tx *Tx) error {
		moved = nil
		claims := map[string][]Quarantined{} // folder ID → the readable records claiming it
		for _, src := range []struct {
			bucket []byte
			decode func(string, []byte) (*Volume, error)
		}{{bucketVolumes, decodeVolume}, {bucketRemoved, decodeRemoved}} {
			err := tx.tx.ForEach(src.bucket, func(k, b []byte) error {
				q := Quarantined{Bucket: string(src.bucket), Key: string(k), At: at.UTC(), Raw: append([]byte(nil), b...)}
				v, err := src.decode(string(k), b)
				if err == nil {
					if err = validName(v.Name); err != nil {
						err = fmt.Errorf("%s %s: %w: %w", src.bucket, k, ErrBadRecord, err)
					}
				}
				if err != nil {
					q.Reason = err.Error()
					moved = append(moved, q)
				} else {
					claims[v.ID] = append(claims[v.ID], q)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, id := range slices.Sorted(maps.Keys(claims)) {
			qs := claims[id]
			if len(qs) < 2 {
				continue
			}
			for _, q := range qs {
				q.Reason = fmt.Sprintf("%s %s: %v: %d records claim the folder %s", q.Bucket, q.Key, ErrBadRecord, len(qs), id)
				moved = append(moved, q)
			}
		}
		for _, q := range moved {
			if err := tx.quarantine(q); err != nil {
				return err
			}
		}
		return nil
	})
	return moved, err
}

func (t *Tx) quarantine(q Quarantined) error {
	b, err := json.Marshal(q)
	if err != nil {
		return err
	}
	key := q.Bucket + "/" + q.Key + "@" + q.At.Format(time.RFC3339Nano)
	if err := t.tx.Put(bucketQuarantine, []byte(key), b); err != nil {
		return err
	}
	return t.tx.Delete([]byte(q.Bucket), []byte(q.Key))
}

// Quarantined lists the records Quarantine moved aside, by bucket and key.
func (s *Store) Quarantined() ([]Quarantined, error) {
	var out []Quarantined
	err := s.View(func(tx *Tx) error {
		return tx.tx.ForEach(bucketQuarantine, func(k, b []byte) error {
			var q Quarantined
			if err := json.Unmarshal(b, &q); err != nil {
				return fmt.Errorf("quarantine entry %q: %w", k, err)
			}
			out = append(out, q)
			return nil
		})
	})
	return out, err
}
