package keysource

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securevol/securevol/crypto"
)

// The key command's time limit holds even when the program leaves a
// process behind that keeps its standard output open: the daemon must not
// wait for that process.
func TestCommandLeavesAProcessBehind(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	want, _ := crypto.NewMasterKey(key)
	cases := []struct {
		name, script string
		ok           bool
		within       time.Duration
	}{
		{"answers then leaves a child", "echo " + hex.EncodeToString(key) + "\n", true, 3 * time.Second},
		{"a child holds the output and it never answers", "wait\n", false, CommandTimeout + 3*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The script is written before any subtest forks: a child
			// forked meanwhile would inherit the open file, and exec of
			// it would fail with ETXTBSY.
			dir := t.TempDir()
			script := filepath.Join(dir, "getkey")
			// The child keeps the output pipe; not our stderr, which
			// would hold up go test.
			body := "#!/bin/sh\nsleep 30 2>/dev/null &\necho $! >" + dir + "/child\n" + tc.script
			if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if b, err := os.ReadFile(filepath.Join(dir, "child")); err == nil {
					if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			t.Parallel()
			start := time.Now()
			k, err := RunCommand(script)
			took := time.Since(start)
			if took > tc.within {
				t.Fatalf("took %v, want at most %v", took, tc.within)
			}
			if tc.ok && (err != nil || !k.Equal(want)) {
				t.Fatalf("key command: %v", err)
			}
			if !tc.ok && (!errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "no answer within")) {
				t.Fatalf("key command that never answers: %v", err)
			}
		})
	}
}

// What a key command prints is taken in every documented spelling, and
// an error never quotes it.
func TestDecodeKey(t *testing.T) {
	k := bytes.Repeat([]byte{7}, 32)
	good := map[string][]byte{
		"raw":        k,
		"raw+nl":     append(append([]byte(nil), k...), '\n'),
		"hex":        []byte(hex.EncodeToString(k) + "\n"),
		"base64":     []byte("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"),
		"base64-raw": []byte("  BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc "),
	}
	for name, in := range good {
		got, err := DecodeKey(in)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: %x %v", name, got, err)
		}
	}
	for _, in := range []string{"", "short", hex.EncodeToString(k[:31]), strings.Repeat("z", 64)} {
		_, err := DecodeKey([]byte(in))
		if !errors.Is(err, ErrNotAKey) || in != "" && strings.Contains(err.Error(), in[:min(len(in), 8)]) {
			t.Errorf("DecodeKey(%q) = %v", in, err)
		}
	}
}

func TestCommandErrors(t *testing.T) {
	dir := t.TempDir()
	fails := filepath.Join(dir, "fails")
	os.WriteFile(fails, []byte("#!/bin/sh\nexit 3\n"), 0o700)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("#!/bin/sh\necho not-a-key-SECRETISH\n"), 0o700)
	for _, tc := range []struct {
		command string
		want    error
		text    string
	}{
		{"   ", ErrEmpty, "key command"},
		{fails, nil, "exit status 3"},
		{junk, ErrNotAKey, "printed 20 bytes"},
		{filepath.Join(dir, "missing"), os.ErrNotExist, "missing"},
	} {
		_, err := RunCommand(tc.command)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) || strings.Contains(err.Error(), "SECRETISH") {
			t.Errorf("RunCommand(%q) = %v, want %v with %q", tc.command, err, tc.want, tc.text)
		}
	}
}
