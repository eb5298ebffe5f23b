package crypto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func fastKDF() *KDFParams {
	return &KDFParams{Algorithm: "argon2id", Salt: ramp(3, 32), Time: 1, MemoryKiB: 64, Threads: 1}
}

// headerCases are the key sources a header is made and opened with: the
// right one, a wrong one, and one to rotate to.
func headerCases(t *testing.T) []struct {
	name          string
	ks, wrong, to KeySource
} {
	k1, _ := RandomMasterKey()
	k2, _ := RandomMasterKey()
	pass, err := NewPassphrase([]byte("correct horse"), fastKDF())
	if err != nil {
		t.Fatal(err)
	}
	wrongPass, _ := NewPassphrase([]byte("wrong horse"), fastKDF())
	return []struct {
		name          string
		ks, wrong, to KeySource
	}{
		{"keyfile", StaticKey{k1}, StaticKey{k2}, StaticKey{k2}},
		{"passphrase", pass, wrongPass, StaticKey{k1}},
	}
}

func TestHeaderLifecycle(t *testing.T) {
	for _, tc := range headerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			h, keys, err := NewHeader(tc.ks, "vol", map[string]string{"uid": "7"})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(raw, keys.content[:8]) {
				t.Fatal("header holds key material in the clear")
			}
			h2, err := ParseHeader(raw)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h2.Open(tc.wrong); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("wrong key: %v", err)
			}
			got, err := h2.Open(tc.ks)
			if err != nil || got.content != keys.content || h2.ID != h.ID || h2.Labels["uid"] != "7" {
				t.Fatalf("open: %v", err)
			}
			nh, changed, err := h2.Rewrap(tc.ks, tc.to)
			if err != nil || !changed {
				t.Fatalf("rewrap: %v %v", changed, err)
			}
			if again, changed, err := nh.Rewrap(tc.ks, tc.to); err != nil || changed || again != nh {
				t.Fatalf("second (resumed) rewrap: %v %v", changed, err)
			}
			if _, err := nh.Open(tc.ks); err == nil {
				t.Fatal("old key still opens the header after rotation")
			}
			if _, err := h2.Open(tc.ks); err != nil {
				t.Fatal("Rewrap changed the header it was given")
			}
			got, err = nh.Open(tc.to)
			if err != nil || got.content != keys.content {
				t.Fatalf("new key: %v", err)
			}
		})
	}
}

func TestParseHeaderRejects(t *testing.T) {
	k, _ := RandomMasterKey()
	good, _, err := NewHeader(StaticKey{k}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	goodJSON, _ := good.Marshal()
	edit := func(from, to string) string {
		if !bytes.Contains(goodJSON, []byte(from)) {
			t.Fatalf("no %q in %s", from, goodJSON)
		}
		return strings.Replace(string(goodJSON), from, to, 1)
	}
	for _, tc := range []struct {
		name, content string
		want          error
	}{
		{"json", "{not json SECRETBYTES", ErrMalformedHeader},
		{"empty", "", ErrMalformedHeader},
		{"trailing", string(goodJSON) + "SECRETBYTES", ErrMalformedHeader},
		{"second document", string(goodJSON) + string(goodJSON), ErrMalformedHeader},
		{"unknown field", edit(`"format"`, `"SECRETBYTES": 1, "format"`), ErrMalformedHeader},
		{"format", edit(`"format": 1`, `"format": 99`), ErrMalformedHeader},
		{"id", edit(`"id": "`+good.ID, `"id": "../SECRETBYTES`), ErrMalformedHeader},
		{"uppercase id", edit(good.ID, strings.ToUpper(good.ID)), ErrMalformedHeader},
		{"cipher", edit(ContentCipherName, "SECRETBYTES"), ErrMalformedHeader},
		{"type", edit(`"format": 1`, `"format": "SECRETBYTES"`), ErrMalformedHeader},
		{"number", edit(`"format": 1`, `"format": 1234567.5`), ErrMalformedHeader},
		{"time", edit(`"created": "`, `"created": "SECRETBYTES`), ErrMalformedHeader},
		{"short key", edit(`"wrapped_key": "`, `"wrapped_key": "AAAA`), ErrMalformedHeader},
		{"too large", string(goodJSON) + strings.Repeat(" ", MaxHeaderSize), ErrHeaderTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHeader([]byte(tc.content))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "1234567") {
				t.Fatalf("error quotes the input: %v", err)
			}
		})
	}
}
