package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/securevol/securevol/daemon"
)

// commandPaths lists every command and subcommand, as the words that run
// it ("key rotate"), and the names of its flags.
func commandPaths(c *cobra.Command, prefix []string) map[string][]string {
	out := map[string][]string{}
	path := append(append([]string(nil), prefix...), c.Name())
	var flags []string
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			flags = append(flags, "--"+f.Name)
		}
	})
	out[strings.Join(path[1:], " ")] = flags
	for _, sub := range c.Commands() {
		for k, v := range commandPaths(sub, path) {
			out[k] = v
		}
	}
	return out
}

// -h and --help work on every command and subcommand: exit 0, the usage,
// and every flag the command has.
func TestHelpEveryCommand(t *testing.T) {
	s, _ := testStreams(t)
	paths := commandPaths(newRootCmd(s, daemon.Run), nil)
	// The tree holds what the tests below rely on being covered.
	for _, want := range []string{"", "serve", "key generate", "key rotate", "init", "mount", "fsck", "version",
		"volume ls", "volume inspect", "volume release", "volume removed", "volume undelete",
		"volume export", "volume import", "volume clone", "volume push", "volume pull", "completion bash", "man", "help"} {
		if _, ok := paths[want]; !ok {
			t.Fatalf("no command %q in the tree: %v", want, paths)
		}
	}
	for path, flags := range paths {
		for _, h := range []string{"-h", "--help"} {
			args := append(strings.Fields(path), h)
			if path == "help" {
				args = []string{"help", "mount"} // help's own -h would too; this is how it is used
			}
			stdout, stderr, code := runCLI(t, args...)
			if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
				t.Errorf("securevol %q: exit %d, stderr %q, stdout %q", args, code, stderr, stdout)
				continue
			}
			for _, f := range append(flags, "--help") {
				if path != "help" && !strings.Contains(stdout, f) {
					t.Errorf("securevol %q does not list %s:\n%s", args, f, stdout)
				}
			}
		}
	}
	// Flags of the three commands whose -h used to list none.
	stdout, _, _ := runCLI(t, "mount", "-h")
	for _, f := range []string{"--allow-other", "--max-write", "--debug", "--key-command", "--passphrase-file", "--key-file"} {
		if !strings.Contains(stdout, f) {
			t.Errorf("mount -h lacks %s", f)
		}
	}
}

// The key command line is documented as not secret, yet an admin may put a
// token in it anyway: help never prints it from the environment, and the
// variable still takes effect.
func TestServeHelpHidesKeyCommand(t *testing.T) {
	const secret = "s3cr3t-token-value"
	t.Setenv("SECUREVOL_KEY_COMMAND", "/bin/getkey --token "+secret)
	stdout, stderr, code := runCLI(t, "serve", "-h")
	if code != 0 || !strings.Contains(stdout, "SECUREVOL_KEY_COMMAND") {
		t.Fatalf("serve -h: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, secret) {
		t.Fatalf("serve -h shows the key command from the environment:\n%s", stdout)
	}
	var got daemon.Config
	s, _ := testStreams(t)
	root := newRootCmd(s, func(_ context.Context, cfg daemon.Config) error { got = cfg; return nil })
	root.SetArgs([]string{"serve"})
	if err := root.Execute(); err != nil || !strings.Contains(got.Keys.Command, secret) {
		t.Fatalf("SECUREVOL_KEY_COMMAND ignored: %+v %v", got.Keys, err)
	}
}
