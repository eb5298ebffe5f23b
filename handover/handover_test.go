package handover

import (
	"bytes"
	"errors"
	"testing"

	"filippo.io/age"

	"github.com/securevol/securevol/crypto"
)

func newHeader(t *testing.T) (*crypto.Header, crypto.KeySource, *crypto.VolumeKeys) {
	t.Helper()
	mk, err := crypto.RandomMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	ks := crypto.StaticKey{Key: mk}
	h, keys, err := crypto.NewHeader(ks, "db", map[string]string{"uid": "999"})
	if err != nil {
		t.Fatal(err)
	}
	return h, ks, keys
}

// fastScrypt is a passphrase recipient and identity at a work factor
// tests can afford (age's default, 18, takes about a second).
func fastScrypt(t *testing.T, pass string) (*age.ScryptRecipient, *age.ScryptIdentity) {
	t.Helper()
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	return r, id
}

// A sealed header opens with the handover's export key only, as the same
// volume (name, ID, labels, volume key), and the handover opens with the
// recipient's identity or the passphrase, and nothing else.
func TestSealOpen(t *testing.T) {
	x1, _ := age.GenerateX25519Identity()
	x2, _ := age.GenerateX25519Identity()
	hy, _ := age.GenerateHybridIdentity()
	stranger, _ := age.GenerateX25519Identity()
	passR, passID := fastScrypt(t, "export passphrase")
	_, wrongPass := fastScrypt(t, "another passphrase")
	cases := []struct {
		name       string
		recipients []age.Recipient
		right      []age.Identity
		wrong      []age.Identity
	}{
		{"x25519", []age.Recipient{x1.Recipient()}, []age.Identity{x1}, []age.Identity{stranger}},
		{"two recipients, second opens", []age.Recipient{x1.Recipient(), x2.Recipient()}, []age.Identity{stranger, x2}, []age.Identity{stranger}},
		{"hybrid", []age.Recipient{hy.Recipient()}, []age.Identity{hy}, []age.Identity{x1}},
		{"passphrase", []age.Recipient{passR}, []age.Identity{passID}, []age.Identity{wrongPass}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, ks, keys := newHeader(t)
			ex, err := NewExport(tc.recipients)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := ex.Seal(h, ks)
			if err != nil {
				t.Fatal(err)
			}
			blob := ex.Blob
			sh, err := crypto.ParseHeader(raw)
			if err != nil {
				t.Fatal(err)
			}
			if sh.Name != h.Name || sh.ID != h.ID || sh.Labels["uid"] != "999" || sh.KDF != nil {
				t.Fatalf("sealed header: %s", raw)
			}
			if _, err := sh.Open(ks); !errors.Is(err, crypto.ErrWrongKey) {
				t.Fatalf("the source master key opens the sealed header: %v", err)
			}
			if _, err := Open(blob, tc.wrong); !errors.Is(err, ErrWrongIdentity) {
				t.Fatalf("wrong identity: %v, want ErrWrongIdentity", err)
			}
			export, err := Open(blob, tc.right)
			if err != nil {
				t.Fatal(err)
			}
			got, err := sh.Open(export)
			if err != nil {
				t.Fatal(err)
			}
			// Same volume key: a name sealed by one opens with the other.
			iv := make([]byte, crypto.DirIVSize)
			enc, _ := keys.EncryptName("file", iv)
			if dec, err := got.DecryptName(enc, iv); err != nil || dec != "file" {
				t.Fatalf("the export key opens another volume key: %q, %v", dec, err)
			}
			// The re-wrap to the destination works as an import does it.
			dst, _ := crypto.RandomMasterKey()
			nh, err := sh.Rebind(export, crypto.StaticKey{Key: dst}, "db-copy")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := nh.Open(crypto.StaticKey{Key: dst}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSealRefuses(t *testing.T) {
	h, _, _ := newHeader(t)
	if _, err := NewExport(nil); !errors.Is(err, ErrNoRecipients) {
		t.Errorf("no recipients: %v", err)
	}
	x, _ := age.GenerateX25519Identity()
	passR, _ := fastScrypt(t, "pass")
	if _, err := NewExport([]age.Recipient{x.Recipient(), passR}); err == nil {
		t.Error("a passphrase together with a public key was accepted (age allows a passphrase only alone)")
	}
	ex, err := NewExport([]age.Recipient{x.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crypto.RandomMasterKey()
	if _, err := ex.Seal(h, crypto.StaticKey{Key: other}); !errors.Is(err, crypto.ErrWrongKey) {
		t.Errorf("sealing with a key that does not open the header: %v", err)
	}
}

// Damaged handovers and age files that are no handover are refused.
func TestOpenRefusesDamage(t *testing.T) {
	x, _ := age.GenerateX25519Identity()
	ex, err := NewExport([]age.Recipient{x.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	blob := ex.Blob
	ids := []age.Identity{x}
	flipped := bytes.Clone(blob)
	flipped[len(flipped)-5] ^= 1
	var other bytes.Buffer
	w, _ := age.Encrypt(&other, x.Recipient())
	w.Write(bytes.Repeat([]byte{7}, len(magic)+crypto.KeySize))
	w.Close()
	for name, b := range map[string][]byte{
		"flipped":   flipped,
		"truncated": blob[:len(blob)-10],
		"empty":     nil,
		"not ours":  other.Bytes(),
		"huge":      make([]byte, maxBlob+1),
	} {
		if _, err := Open(b, ids); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
