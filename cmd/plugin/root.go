package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/securevol/securevol/daemon"
)

// runDaemon runs the daemon (daemon.Run; tests look at the configuration
// instead).
type runDaemon func(context.Context, daemon.Config) error

// newRootCmd returns the whole command tree, writing to s; serve runs the
// daemon with runServe.
func newRootCmd(s streams, runServe runDaemon) *cobra.Command {
	root := &cobra.Command{
		Use:   "securevol",
		Short: "Encrypted Docker volumes: each volume its own encrypted directory",
		Long: `securevol is a Docker volume plugin: each volume is an encrypted backing
folder on the host, shown decrypted through a FUSE mount to the containers
that use it. "securevol serve" is the plugin daemon; the other commands
manage its keys and volumes, or work on an encrypted directory directly.`,
		Version:           versionText(),
		Args:              subcommandArgs,
		RunE:              needSubcommand,
		SilenceErrors:     true, // run prints them, with a hint
		SilenceUsage:      true, // a usage error says where the help is
		DisableAutoGenTag: true, // man pages stay the same from build to build
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyEnv(cmd.Flags()) },
	}
	root.SetVersionTemplate("{{.Version}}")
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServeCmd(s, runServe),
		newKeyCmd(s),
		newVolumeCmd(s),
		newInitCmd(s),
		newMountCmd(s),
		newFsckCmd(s),
		newVersionCmd(s),
		newManCmd(),
	)
	// Made now rather than at Execute, so every command is in the tree
	// for help, man pages and tests.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// subcommandArgs refuses an argument to a command that only groups others:
// it names a command that does not exist.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default for its message
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageError{fmt.Errorf("%s", msg)}
}

// needSubcommand runs a group command given without its command.
func needSubcommand(cmd *cobra.Command, _ []string) error {
	fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
	return usageError{errors.New("no command given")}
}

// exactArgs wants one argument per name.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(names) == 0 && len(args) > 0 {
			return usageError{fmt.Errorf("takes no arguments, got %q", args[0])}
		}
		if len(args) != len(names) {
			return usageError{fmt.Errorf("want %d argument(s) (%s), got %d", len(names), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

// envAnnotation marks a flag that an environment variable can set.
const envAnnotation = "securevol_env"

// envName is a flag's environment variable: SECUREVOL_ and the flag in
// upper snake case.
func envName(flag string) string {
	return "SECUREVOL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// withEnv lets environment variables set the named flags, which is how a
// managed plugin's settable env (plugin-config.json) and systemd's
// EnvironmentFile reach the daemon. The help names the variable and never
// shows its value (SECUREVOL_KEY_COMMAND may hold a credential, though
// documented as not secret).
func withEnv(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		f := fs.Lookup(n)
		f.Usage += " (env " + envName(n) + ")"
		fs.SetAnnotation(n, envAnnotation, []string{envName(n)})
	}
}

// applyEnv sets each flag withEnv marked, unless given on the command line
// (a flag beats its variable), from its variable. An empty variable counts
// as unset: a managed plugin's config lists its settable variables with
// empty values.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[envAnnotation]; !ok || f.Changed || err != nil {
			return
		}
		if v := os.Getenv(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("%s: %w", envName(f.Name), e)}
			}
		}
	})
	return err
}
