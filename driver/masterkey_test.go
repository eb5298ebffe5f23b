package driver

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/securevol/securevol/crypto"
)

func TestWrongMasterKey(t *testing.T) {
	e := newEnv(t)
	e.create("vol", nil)
	e.close()
	e.key, _ = crypto.RandomMasterKey()
	e.open()
	_, err := e.d.Mount(&volume.MountRequest{Name: "vol", ID: "abc"})
	if err == nil || !strings.Contains(err.Error(), "master key does not open") {
		t.Fatalf("Mount under the wrong key = %v", err)
	}
}

// Started with the wrong master key (a mistyped passphrase, a replaced key
// file), the daemon still answers Get, so the engine keeps its volumes; but
// it must not create new volumes under that key: once the key source is
// fixed they would be the ones nobody can open.
func TestCreateRefusedUnderWrongMasterKey(t *testing.T) {
	e := newEnv(t)
	e.create("vol", nil)
	e.close()
	good := e.key
	e.key, _ = crypto.RandomMasterKey()
	e.open()
	err := e.d.Create(&volume.CreateRequest{Name: "new"})
	if err == nil || !strings.Contains(err.Error(), "opens none") {
		t.Fatalf("Create under a master key that opens no volume = %v", err)
	}
	if _, err := e.d.Get(&volume.GetRequest{Name: "vol"}); err != nil {
		t.Fatalf("Get under the wrong key: %v", err)
	}
	// With the right key all is well again.
	e.close()
	e.key = good
	e.open()
	e.create("new", nil)
}

// No answer carries key material, wrapped or not.
func TestAnswersHoldNoSecrets(t *testing.T) {
	e := newEnv(t)
	e.create("vol", map[string]string{"uid": "1"})
	h, err := readHeader(e.d.backing(e.record("vol").ID))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := e.d.Get(&volume.GetRequest{Name: "vol"})
	l, _ := e.d.List()
	b, _ := json.Marshal([]any{g, l})
	raw := e.keyRaw
	if len(raw) != crypto.KeySize {
		t.Fatalf("key file holds %d bytes", len(raw))
	}
	for _, secret := range [][]byte{raw, []byte(hex.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(raw)),
		[]byte(base64.StdEncoding.EncodeToString(h.WrappedKey)), []byte(hex.EncodeToString(h.WrappedKey))} {
		if bytes.Contains(b, secret) {
			t.Fatalf("answer contains key material: %s", b)
		}
	}
}
