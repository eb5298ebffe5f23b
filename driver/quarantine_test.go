package driver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	bolt "go.etcd.io/bbolt"

	"github.com/securevol/securevol/store"
)

// writeRecord puts raw bytes under name in the volumes bucket, as damage
// to the file would, behind the store's back. The database must be closed.
func (e *env) writeRecord(name string, raw []byte) {
	e.t.Helper()
	db, err := bolt.Open(filepath.Join(e.stateDir, "securevol.db"), 0o600, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("volumes")).Put([]byte(name), raw) }); err != nil {
		e.t.Fatal(err)
	}
}

func listNames(t *testing.T, d *Driver) []string {
	t.Helper()
	l, err := d.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var names []string
	for _, v := range l.Volumes {
		names = append(names, v.Name)
	}
	return names
}

// One undecodable record stops neither List, nor Get of other names, nor
// start-up: it is moved aside and reported, its folder is kept, and the
// volume comes back from its folder's header.
func TestDamagedRecordQuarantined(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"alpha", "bad", "omega"} {
		e.create(n, nil)
	}
	bad := e.record("bad")
	garbage := []byte("\x00{not json at all")

	// While running: the others still answer.
	e.st.Close()
	e.writeRecord("bad", garbage)
	st, err := store.Open(filepath.Join(e.stateDir, "securevol.db"), 0)
	if err != nil {
		t.Fatal(err)
	}
	e.d.cfg.Store, e.st = st, st
	if got := listNames(t, e.d); !slices.Equal(got, []string{"alpha", "omega"}) {
		t.Fatalf("List with a damaged record = %v", got)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "alpha"}); err != nil {
		t.Fatalf("Get of another volume: %v", err)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "bad"}); !errors.Is(err, store.ErrBadRecord) {
		t.Fatalf("Get of the damaged record = %v, want ErrBadRecord", err)
	}

	// At the next start it is quarantined and the volume recovered.
	e.close()
	rep := e.open()
	if !slices.Equal(rep.Quarantined, []string{"bad"}) || !slices.Equal(rep.Recovered, []string{"bad"}) {
		t.Fatalf("start report %+v", rep)
	}
	if got := listNames(t, e.d); !slices.Equal(got, []string{"alpha", "bad", "omega"}) {
		t.Fatalf("List after start = %v", got)
	}
	if got := e.record("bad"); got.ID != bad.ID {
		t.Fatalf("recovered %+v, want folder %s", got, bad.ID)
	}
	if _, err := readHeader(e.d.backing(bad.ID)); err != nil {
		t.Fatalf("the damaged record's folder: %v", err)
	}
	q, err := e.d.Quarantined()
	if err != nil || len(q) != 1 || q[0].Key != "bad" || !bytes.Equal(q[0].Raw, garbage) || q[0].Reason == "" {
		t.Fatalf("Quarantined = %+v, %v", q, err)
	}
	// Reported once: the next start finds nothing more.
	e.close()
	if rep := e.open(); len(rep.Quarantined) != 0 {
		t.Fatalf("second start %+v", rep)
	}
}

// Records that decode but would point a removal outside the volume's own
// folder (an empty or ".." ID, a name that is not their key) are damage
// too: quarantined, and nothing is deleted.
func TestRecordsPointingElsewhereQuarantined(t *testing.T) {
	e := newEnv(t)
	e.create("keep", nil)
	keep := e.record("keep")
	e.close()
	for name, raw := range map[string]string{
		"empty-id":  `{"id":"","name":"empty-id","removing":true}`,
		"dotdot-id": `{"id":"..","name":"dotdot-id","removing":true}`,
		"slash-id":  `{"id":"../../etc","name":"slash-id","removing":true}`,
		"other":     `{"id":"` + keep.ID + `","name":"keep","removing":true}`,
	} {
		e.writeRecord(name, []byte(raw))
	}
	rep := e.open()
	if len(rep.Quarantined) != 4 || len(rep.Finished) != 0 {
		t.Fatalf("start report %+v", rep)
	}
	if _, err := readHeader(e.d.backing(keep.ID)); err != nil {
		t.Fatalf("a quarantined record reached another volume's folder: %v", err)
	}
	if got := listNames(t, e.d); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("List = %v", got)
	}
	if _, err := os.Stat(e.d.volDir); err != nil {
		t.Fatal(err)
	}
}
