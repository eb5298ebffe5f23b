package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// The plaintext scan is what the no-plaintext assertions rest on: check it
// finds what it should, in names and in bytes, and nothing else. Needs no
// engine.
func TestFindPlaintext(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "volumes", "abc")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"ciphertext.bin":   "\x00\x01 nothing to see",
		"holds-marker.bin": "prefix sve2e-marker-1 suffix",
		"sve2e-name-2.txt": "harmless",
		"tail-a":           "ends with sve2e-name-3",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(sub, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		needles []string
		want    int
	}{
		{[]string{"sve2e-marker-1"}, 1},
		{[]string{"sve2e-name-2"}, 1},
		{[]string{"sve2e-name-3"}, 1},
		{[]string{"sve2e-marker-1", "sve2e-name-2", "sve2e-name-3"}, 3},
		{[]string{"absent"}, 0},
	} {
		if hits := findPlaintext(t, dir, tc.needles...); len(hits) != tc.want {
			t.Errorf("needles %v: %d hits %v, want %d", tc.needles, len(hits), hits, tc.want)
		}
	}
}
