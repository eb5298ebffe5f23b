package crypto

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// parseErrors are all ParseHeader may say, with every number as '#'. Its
// messages never quote the document: a "header" may be any file a hostile
// folder holds, reached through a link (a key file, /etc/shadow).
var parseErrors = map[string]bool{}

func init() {
	for _, m := range []string{
		"header too large: # bytes, at most #",
		"malformed header: data after the JSON document",
		"malformed header: JSON syntax error at byte #",
		"malformed header: a value of the wrong type at byte #",
		"malformed header: empty or truncated JSON",
		"malformed header: not a securevol header document (unknown field or invalid value)",
		"malformed header: a format # header with format # fields",
		"malformed header: the header's authentication tag is # bytes, want #",
		"malformed header: format # is not supported by this securevol (supports # and #)",
		"malformed header: upgraded from unknown format #",
		"malformed header: the directory ID is not # lowercase hex digits",
		"malformed header: unsupported ciphers (this securevol knows AES-#-GCM/# and EME-AES-#/base#url)",
		"malformed header: wrapped key is # bytes, want #",
		"malformed header: unsupported KDF algorithm (this securevol knows argon#id)",
		"malformed header: KDF salt of # bytes (want # to #)",
		"malformed header: KDF parameters below the floor (t >= #, m >= # MiB, p >= #)",
		"malformed header: KDF parameters above the ceiling (t <= #, m <= # MiB, p <= #): refusing to spend that much time or memory",
	} {
		parseErrors[m] = true
	}
}

var digits = regexp.MustCompile(`[0-9]+`)

// FuzzParseHeader: no input panics, takes long, or appears in an error;
// what parses re-encodes to a document that parses to the same header.
// The seeds run with every `go test`.
func FuzzParseHeader(f *testing.F) {
	mk, _ := NewMasterKey(kvMaster)
	v2, _, _ := NewHeader(StaticKey{mk}, "vol", map[string]string{"uid": "1000"})
	v2json, _ := v2.Marshal()
	kv := kvHeaderV2()
	kv.sealNonce(mk, kvVolumeKey, kvWrapNonce)
	kvjson, _ := kv.Marshal()
	up, _ := v1HeaderFor(f).Upgrade(StaticKey{mk}, "up", nil)
	upjson, _ := up.Marshal()
	v1json, _ := v1HeaderFor(f).Marshal()
	for _, seed := range [][]byte{
		v2json, kvjson, upjson, v1json,
		v2json[:len(v2json)/2],
		append(bytes.Clone(v2json), v2json...),
		bytes.Replace(v2json, []byte(`"format": 2`), []byte(`"format": 2, "format": 1`), 1),
		bytes.Replace(v2json, []byte(`"format"`), []byte(`"FORMAT"`), 1),
		bytes.Replace(v2json, []byte(`"format": 2`), []byte(`"format": 1e400`), 1),
		bytes.Replace(kvjson, []byte(`"memory_kib": 65536`), []byte(`"memory_kib": 4294967295`), 1),
		bytes.Replace(v2json, []byte(`"vol"`), []byte(`"\u00e9\ud800\xff"`), 1),
		[]byte(`{}`), []byte(`null`), []byte(`[]`), []byte(`"x"`), []byte(``), []byte("\x00\xff"),
		[]byte(strings.Repeat("[", 20000)),
		[]byte(`{"labels":{` + strings.Repeat(`"k":"v",`, 3000) + `"k":"v"}}`),
		[]byte(`{"format":2,"id":"` + strings.Repeat("A", MaxHeaderSize) + `"}`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		h, err := ParseHeader(b)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("ParseHeader took %v on %d bytes", d, len(b))
		}
		if err != nil {
			if msg := digits.ReplaceAllString(err.Error(), "#"); !parseErrors[msg] {
				t.Fatalf("unexpected error message (does it quote the input?): %s", err)
			}
			return
		}
		m1, err := h.Marshal()
		if err != nil {
			t.Fatalf("a parsed header does not marshal: %v", err)
		}
		h2, err := ParseHeader(m1)
		if err != nil {
			t.Fatalf("a re-encoded header does not parse: %v", err)
		}
		if m2, _ := h2.Marshal(); !bytes.Equal(m1, m2) || !bytes.Equal(h.macInput(), h2.macInput()) {
			t.Fatalf("re-encoding changed the header:\n%s\n%s", m1, m2)
		}
	})
}
