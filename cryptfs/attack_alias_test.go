package cryptfs

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securevol/securevol/crypto"
)

// TestAttackNameAlias: an encrypted name has a second, non-canonical
// base64url spelling (the unused low bits of its last character set) that
// decodes to the same bytes. Stored beside the real entry, the alias must
// not show as a second entry with the same plaintext name.
func TestAttackNameAlias(t *testing.T) {
	long := strings.Repeat("x", 255) // hashed; its sidecar holds the encoded name
	for _, tc := range []struct{ kind, name string }{{"short", "alias-me"}, {"long", long}} {
		t.Run(tc.kind, func(t *testing.T) {
			m := newTestMount(t)
			if err := os.WriteFile(m.path(tc.name), []byte("content"), 0o644); err != nil {
				t.Fatal(err)
			}
			back := m.backingOf(tc.name)
			dir := filepath.Dir(back)
			m.offline(func() {
				if tc.kind == "short" {
					plantAlias(t, back, filepath.Join(dir, nonCanonical(t, filepath.Base(back))))
					return
				}
				enc, err := os.ReadFile(crypto.LongNameSidecar(back))
				if err != nil {
					t.Fatal(err)
				}
				alias := nonCanonical(t, strings.TrimSpace(string(enc)))
				aliasBack, _ := crypto.BackingName(alias)
				plantAlias(t, back, filepath.Join(dir, aliasBack))
				if err := os.WriteFile(filepath.Join(dir, crypto.LongNameSidecar(aliasBack)), []byte(alias), 0o400); err != nil {
					t.Fatal(err)
				}
			})
			got := listDir(t, m.dir)
			n := 0
			for _, g := range got {
				if g == tc.name {
					n++
				}
			}
			if n != 1 {
				t.Errorf("the listing shows the %s name %d times (%d entries in all); want once", tc.kind, n, len(got))
			}
		})
	}
}

// nonCanonical returns another unpadded base64url spelling of the same
// bytes as enc: its last character with the lowest unused bit set.
func nonCanonical(t *testing.T, enc string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(enc)%4 == 0 {
		t.Fatalf("%q uses every bit of its last character: no alias", enc)
	}
	last := strings.IndexByte(alphabet, enc[len(enc)-1])
	alias := enc[:len(enc)-1] + string(alphabet[last^1])
	a, errA := base64.RawURLEncoding.DecodeString(alias)
	b, errB := base64.RawURLEncoding.DecodeString(enc)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Fatalf("%q is no alias of %q: %v %v", alias, enc, errA, errB)
	}
	return alias
}

// plantAlias stores the alias as a hard link of the real backing entry.
func plantAlias(t *testing.T, back, alias string) {
	t.Helper()
	if err := os.Link(back, alias); err != nil {
		t.Fatal(err)
	}
}
