package main

import (
	"bytes"
	"encoding/hex"
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
func TestKeyCommandLeavesAProcessBehind(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	want, _ := crypto.NewMasterKey(key)
	cases := []struct {
		name, script string
		ok           bool
		within       time.Duration
	}{
		{"answers then leaves a child", "echo " + hex.EncodeToString(key) + "\n", true, 3 * time.Second},
		{"a child holds the output and it never answers", "wait\n", false, keyCommandTimeout + 3*time.Second},
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
			k, err := runKeyCommand(script)
			took := time.Since(start)
			if took > tc.within {
				t.Fatalf("took %v, want at most %v", took, tc.within)
			}
			if tc.ok && (err != nil || !k.Equal(want)) {
				t.Fatalf("key command: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "no answer within")) {
				t.Fatalf("key command that never answers: %v", err)
			}
		})
	}
}
