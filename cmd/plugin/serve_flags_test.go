package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/daemon"
)

// serveConfig runs `securevol serve args` up to the daemon and returns
// the configuration it would run with.
func serveConfig(t *testing.T, args ...string) (daemon.Config, int, string) {
	t.Helper()
	var got daemon.Config
	capture := func(_ context.Context, cfg daemon.Config) error { got = cfg; return nil }
	s, _ := testStreams(t)
	root := newRootCmd(s, capture)
	root.SetArgs(append([]string{"serve"}, args...))
	_, err := root.ExecuteC()
	code := 0
	if err != nil {
		code = 1
		if isUsage(err) {
			code = 2
		}
		return got, code, err.Error()
	}
	return got, code, ""
}

// Flags, their variables (a flag wins; an empty variable is unset) and the
// one key source rule.
func TestServeFlags(t *testing.T) {
	t.Setenv("SECUREVOL_STATE_DIR", "/srv/sv")
	t.Setenv("SECUREVOL_LOG_LEVEL", "warn")
	t.Setenv("SECUREVOL_PASSPHRASE_FILE", "")
	t.Setenv("SECUREVOL_KEY_FILE", "")
	cfg, code, msg := serveConfig(t, "--log-level", "debug", "--rebuild")
	if code != 0 {
		t.Fatal(msg)
	}
	if cfg.StateDir != "/srv/sv" || cfg.MountRoot != "" || cfg.Socket != daemon.DefaultSocket || !cfg.Rebuild ||
		cfg.Keys.KeyFile+cfg.Keys.PassphraseFile+cfg.Keys.Command != "" || cfg.Keys.Prompt != nil || !cfg.Log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		t.Fatalf("%+v (keys %+v)", cfg, cfg.Keys)
	}
	// The key file counts as chosen only when given.
	if cfg, _, _ := serveConfig(t, "--key-file", "/k"); cfg.Keys.KeyFile != "/k" {
		t.Fatalf("--key-file: %+v", cfg.Keys)
	}
	t.Setenv("SECUREVOL_KEY_FILE", "/env.key")
	if cfg, _, _ := serveConfig(t); cfg.Keys.KeyFile != "/env.key" {
		t.Fatalf("SECUREVOL_KEY_FILE: %+v", cfg.Keys)
	}
	if cfg, _, _ := serveConfig(t, "--key-file", "/flag.key"); cfg.Keys.KeyFile != "/flag.key" {
		t.Fatalf("--key-file beside SECUREVOL_KEY_FILE: %+v", cfg.Keys)
	}
	t.Setenv("SECUREVOL_KEY_FILE", "")

	for _, tc := range []struct {
		args []string
		env  [2]string
		want string
	}{
		{[]string{"--passphrase-file", "/p", "--key-command", "x"}, [2]string{}, "more than one"},
		{[]string{"--key-file", "/k", "--passphrase-file", "/p"}, [2]string{}, "more than one"},
		{[]string{"--key-file", "/k"}, [2]string{"SECUREVOL_KEY_COMMAND", "/bin/getkey"}, "more than one"},
		{[]string{"--log-format", "xml"}, [2]string{}, "log format"},
		{[]string{"--log-level", "loud"}, [2]string{}, "log level"},
		{nil, [2]string{"SECUREVOL_REBUILD", "maybe"}, "SECUREVOL_REBUILD"},
		{[]string{"stray"}, [2]string{}, "takes no arguments"},
		{[]string{"--no-such-flag"}, [2]string{}, "unknown flag"},
	} {
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], tc.env[1])
		}
		_, code, msg := serveConfig(t, tc.args...)
		if code != 2 || !strings.Contains(msg, tc.want) {
			t.Errorf("serve %q %v: exit %d %q, want a usage error with %q", tc.args, tc.env, code, msg, tc.want)
		}
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], "")
		}
	}
}
