package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// floorKDF is the cheapest setting securevol accepts (RFC 9106's second
// recommendation), with a fixed salt.
func floorKDF() *KDFParams {
	return &KDFParams{Algorithm: "argon2id", Salt: ramp(3, 32), Time: MinKDFTime, MemoryKiB: MinKDFMemoryKiB, Threads: 4}
}

// headerCases are the key sources a header is made and opened with: the
// right one, a wrong one, and one to rotate to.
func headerCases(t *testing.T) []struct {
	name          string
	ks, wrong, to KeySource
} {
	k1, _ := RandomMasterKey()
	k2, _ := RandomMasterKey()
	pass, err := NewPassphrase([]byte("correct horse"), floorKDF())
	if err != nil {
		t.Fatal(err)
	}
	wrongPass, _ := NewPassphrase([]byte("wrong horse"), floorKDF())
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
		{"format", edit(`"format": 2`, `"format": 99`), ErrMalformedHeader},
		{"id", edit(`"id": "`+good.ID, `"id": "../SECRETBYTES`), ErrMalformedHeader},
		{"uppercase id", edit(good.ID, strings.ToUpper(good.ID)), ErrMalformedHeader},
		{"cipher", edit(ContentCipherName, "SECRETBYTES"), ErrMalformedHeader},
		{"type", edit(`"format": 2`, `"format": "SECRETBYTES"`), ErrMalformedHeader},
		{"number", edit(`"format": 2`, `"format": 1234567.5`), ErrMalformedHeader},
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

// Every field of a format 2 header is authenticated: changing the ID or the
// name breaks the key's unwrapping, changing anything else breaks the MAC.
func TestHeaderV2Tamper(t *testing.T) {
	k, _ := RandomMasterKey()
	ks := StaticKey{k}
	pass, _ := NewPassphrase([]byte("pw"), floorKDF())
	for _, tc := range []struct {
		name   string
		ks     KeySource
		change func(h *Header)
		want   error
	}{
		{"id", ks, func(h *Header) { h.ID = strings.Repeat("ab", 16) }, ErrWrongKey},
		{"name", ks, func(h *Header) { h.Name = "other" }, ErrWrongKey},
		{"label value", ks, func(h *Header) { h.Labels["uid"] = "0" }, ErrHeaderTampered},
		{"label added", ks, func(h *Header) { h.Labels["gid"] = "0" }, ErrHeaderTampered},
		{"labels dropped", ks, func(h *Header) { h.Labels = nil }, ErrHeaderTampered},
		{"label moved into the key", ks, func(h *Header) { h.Labels = map[string]string{"uid7": ""} }, ErrHeaderTampered},
		{"created", ks, func(h *Header) { h.Created = h.Created.Add(time.Second) }, ErrHeaderTampered},
		{"mac", ks, func(h *Header) { h.MAC[0] ^= 1 }, ErrHeaderTampered},
		{"kdf time", pass, func(h *Header) { h.KDF.Time++ }, ErrWrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, err := NewHeader(tc.ks, "vol", map[string]string{"uid": "7"})
			if err != nil {
				t.Fatal(err)
			}
			tc.change(h)
			raw, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			h2, err := ParseHeader(raw)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h2.Open(tc.ks); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}
}

// v1Header is the format 1 header of the known-answer vector: volume key
// ramp(0x20, 32) wrapped under master key ramp(0, 32), with a "name" label
// that nothing authenticates.
func v1Header(t *testing.T) *Header { return v1HeaderFor(t) }

func v1HeaderFor(t testing.TB) *Header {
	t.Helper()
	wk, _ := hex.DecodeString(wantWrapped)
	raw := fmt.Sprintf(`{"format":1,"id":%q,"created":"2024-01-02T03:04:05Z","content":%q,"names":%q,"wrapped_key":%q,"labels":{"name":"planted","uid":"0"}}`,
		kvDirID, ContentCipherName, NameCipherName, base64.StdEncoding.EncodeToString(wk))
	h, err := ParseHeader([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestUpgradeV1(t *testing.T) {
	mk, _ := NewMasterKey(kvMaster)
	ks := StaticKey{mk}
	h := v1Header(t)
	if h.Authenticated() || h.VolumeName() != "planted" {
		t.Fatalf("v1 header: authenticated %v, name %q", h.Authenticated(), h.VolumeName())
	}
	v1keys, err := h.Open(ks)
	if err != nil || v1keys.content != newVolumeKeys(kvVolumeKey).content {
		t.Fatalf("v1 open: %v", err)
	}
	other, _ := RandomMasterKey()
	if _, err := h.Upgrade(StaticKey{other}, "vol", nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("upgrade under a wrong key: %v", err)
	}
	nh, err := h.Upgrade(ks, "vol", map[string]string{"uid": "1000"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := nh.Marshal()
	nh, err = ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	if nh.Format != FormatVersion || nh.ID != h.ID || !nh.Created.Equal(h.Created) || nh.VolumeName() != "vol" || nh.Labels["uid"] != "1000" || !nh.Authenticated() {
		t.Fatalf("upgraded header: %s", raw)
	}
	keys, err := nh.Open(ks)
	if err != nil || keys.content != v1keys.content {
		t.Fatalf("the upgraded header opens another volume key: %v", err)
	}
	if _, err := nh.Upgrade(ks, "vol", nil); !errors.Is(err, ErrNotV1) {
		t.Fatalf("second upgrade: %v", err)
	}
	// A rotation keeps a v1 header v1 (its name is not known here).
	rh, changed, err := h.Rewrap(ks, StaticKey{other})
	if err != nil || !changed || rh.Format != FormatV1 {
		t.Fatalf("rewrap of v1: %v", err)
	}
	if keys, err := rh.Open(StaticKey{other}); err != nil || keys.content != v1keys.content {
		t.Fatalf("rewrapped v1: %v", err)
	}
}

// Two volumes' headers cannot be swapped: each opens only as its own name.
func TestHeaderNamesDiffer(t *testing.T) {
	k, _ := RandomMasterKey()
	ha, _, _ := NewHeader(StaticKey{k}, "a", nil)
	hb, _, _ := NewHeader(StaticKey{k}, "b", nil)
	// Graft b's wrapped key and MAC into a's header: it no longer opens.
	ha.WrappedKey, ha.MAC = hb.WrappedKey, hb.MAC
	if _, err := ha.Open(StaticKey{k}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("grafted key: %v", err)
	}
	hb.ID = ha.ID
	if _, err := hb.Open(StaticKey{k}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("b's header with a's ID: %v", err)
	}
}

// Rebind makes another volume's header over the same volume key: new
// name, new directory ID, wrapped by the new key source only; the labels
// stay; format 1 and a wrong old key are refused.
func TestRebind(t *testing.T) {
	for _, tc := range headerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			h, keys, err := NewHeader(tc.ks, "src", map[string]string{"uid": "7"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Rebind(tc.wrong, tc.to, "dst"); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("rebind with a wrong key: %v", err)
			}
			nh, err := h.Rebind(tc.ks, tc.to, "dst")
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := nh.Marshal()
			if nh, err = ParseHeader(raw); err != nil {
				t.Fatal(err)
			}
			if nh.Name != "dst" || nh.ID == h.ID || nh.Labels["uid"] != "7" || nh.Format != FormatVersion {
				t.Fatalf("rebound header: %s", raw)
			}
			got, err := nh.Open(tc.to)
			if err != nil || got.content != keys.content {
				t.Fatalf("the rebound header opens another volume key: %v", err)
			}
			if _, err := nh.Open(tc.ks); err == nil && tc.ks != tc.to {
				t.Fatal("the old key source opens the rebound header")
			}
			if _, err := h.Open(tc.ks); err != nil || h.Name != "src" {
				t.Fatalf("the original header changed: %v", err)
			}
		})
	}
	mk, _ := NewMasterKey(kvMaster)
	if _, err := v1Header(t).Rebind(StaticKey{mk}, StaticKey{mk}, "dst"); !errors.Is(err, ErrNotV2) {
		t.Fatalf("rebind of a format 1 header: %v", err)
	}
}
