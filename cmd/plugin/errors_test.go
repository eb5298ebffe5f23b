package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/keysource"
	"github.com/securevol/securevol/store"
)

// runCLI runs the command line in this process, stdin at /dev/null, and
// returns what it wrote to stdout and stderr and its exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	s, _ := testStreams(t)
	var out, errb bytes.Buffer
	s.out, s.err = &out, &errb
	code = run(args, s)
	return out.String(), errb.String(), code
}

// testStreams are streams reading /dev/null and writing to one buffer.
func testStreams(t *testing.T) (streams, *bytes.Buffer) {
	t.Helper()
	in, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	var b bytes.Buffer
	return streams{in: in, out: &b, err: &b}, &b
}

// A wrong command line exits 2 and says what is wrong and where the help
// is, once, without a stray ": usage"; a failure exits 1.
func TestCommandLineErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "securevol: no command given"},
		{[]string{"frobnicate"}, 2, `securevol: unknown command "frobnicate"`},
		{[]string{"moutn"}, 2, "did you mean mount?"},
		{[]string{"mount", "onlyone"}, 2, "securevol mount: want 2 argument(s) (DIR MOUNTPOINT), got 1"},
		{[]string{"mount", "--max-write", "5", "a", "b"}, 2, "--max-write must be a multiple of 4096"},
		{[]string{"init", "/tmp/x"}, 2, "securevol init: no master key source given: give --key-file, --passphrase-file or --key-command"},
		{[]string{"fsck", "--key-file", "/k", "--key-command", "x", "/d"}, 2, "give only one of"},
		{[]string{"key"}, 2, "securevol key: no command given"},
		{[]string{"key", "rotate"}, 2, "--new-key-file is required"},
		{[]string{"key", "frob"}, 2, `unknown command "frob" for "securevol key"`},
		{[]string{"volume", "inspect"}, 2, "want at least one volume name"},
		{[]string{"serve", "--no-such-flag"}, 2, "securevol serve: unknown flag: --no-such-flag"},
		{[]string{"serve", "--log-format", "xml"}, 2, "unknown log format"},
		{[]string{"serve", "stray"}, 2, `securevol serve: takes no arguments, got "stray"`},
		{[]string{"volume", "ls", "--state-dir", "/nonexistent"}, 1, "no securevol daemon answers"},
		{[]string{"fsck", "--key-file", "/nonexistent/key", "/d"}, 1, "securevol fsck: /nonexistent/key"},
	} {
		_, stderr, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("securevol %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		if strings.Contains(stderr, ": usage") || strings.Count(stderr, tc.want) != 1 {
			t.Errorf("securevol %q: stderr %q", tc.args, stderr)
		}
		if help := strings.Contains(stderr, "--help' for usage"); help != (tc.code == 2) {
			t.Errorf("securevol %q: pointer to the help shown %v, want %v: %q", tc.args, help, tc.code == 2, stderr)
		}
	}
}

// Lower layers say what is wrong; the command line adds how to fix it.
func TestHints(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&keyfile.Error{Path: "/k", Err: keyfile.ErrPerms}, "chmod 600 /k"},
		{&keyfile.Error{Path: "/k", Err: keyfile.ErrOwner}, "chown"},
		{&keyfile.Error{Path: "/k", Err: keyfile.ErrKeySize}, "securevol key generate"},
		{crypto.ErrNeedsPassphrase, "--passphrase-file"},
		{crypto.ErrNeedsRawKey, "--key-file"},
		{keysource.ErrConflict, "only one of"},
		{keysource.ErrNone, "--key-command"},
		{daemon.ErrRunning, "--state-dir"},
		{store.ErrDamaged, "--rebuild"},
		{daemon.ErrKeySource, "securevol key rotate"},
		{daemon.ErrNoDaemon, "securevol serve"},
		{&daemon.RemoteError{Msg: "only root", Err: daemon.ErrForbidden}, "as root"},
		{errors.New("other"), ""},
	} {
		got := hint(fmt.Errorf("open /x: %w", tc.err))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("hint(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
