package daemon

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/store"
)

func storedKDF(t *testing.T, st *store.Store) *crypto.KDFParams {
	t.Helper()
	var b []byte
	st.View(func(tx *store.Tx) error { b = tx.Meta(metaKDF); return nil })
	if b == nil {
		return nil
	}
	p := &crypto.KDFParams{}
	if err := json.Unmarshal(b, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// A rebuilt database adopts the KDF parameters of a volume the passphrase
// opens, never those of a planted header it does not open (found first).
func TestPassphraseAdoptsOnlyOpeningKDF(t *testing.T) {
	stateDir := t.TempDir()
	pass := []byte("correct horse")
	real, _ := crypto.NewPassphrase(pass, nil)
	planted, _ := crypto.NewPassphrase([]byte("attacker"), nil)
	initVolume(t, stateDir, "00-planted", planted)
	want := initVolume(t, stateDir, "11-real", real)
	log := logrus.NewEntry(logrus.New())

	open := func() *store.Store {
		st, err := store.Open(filepath.Join(stateDir, "db"), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	st := open()
	p, err := passphraseSource(stateDir, st, pass, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.NewKDF(); !bytes.Equal(got.Salt, want.KDF.Salt) {
		t.Fatal("did not adopt the parameters of the volume the passphrase opens")
	}
	if s := storedKDF(t, st); s == nil || !bytes.Equal(s.Salt, want.KDF.Salt) {
		t.Fatal("adopted parameters not stored")
	}
	st.Close()

	// A wrong passphrase adopts nothing and stores nothing.
	os.Remove(filepath.Join(stateDir, "db"))
	st = open()
	p, err = passphraseSource(stateDir, st, []byte("wrong"), log)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p.NewKDF().Salt, want.KDF.Salt) || bytes.Equal(p.NewKDF().Salt, planted.NewKDF().Salt) {
		t.Fatal("a wrong passphrase adopted a header's parameters")
	}
	if storedKDF(t, st) != nil {
		t.Fatal("parameters stored under a wrong passphrase")
	}
}
