package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/keyfile"
)

func newKeyCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Make or rotate a master key",
		Args:  subcommandArgs,
		RunE:  needSubcommand,
	}
	cmd.AddCommand(newKeyGenerateCmd(s), newKeyRotateCmd(s))
	return cmd
}

func newKeyGenerateCmd(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "generate FILE",
		Short: "Write a new random master key to FILE (mode 0600)",
		Long:  "Write a new random master key to FILE with mode 0600. An existing file is never overwritten. Back the key up: without it the data cannot be read.",
		Args:  exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := keyfile.GenerateKeyFile(args[0]); err != nil {
				return fmt.Errorf("%w (an existing key is never overwritten)", err)
			}
			fmt.Fprintf(s.err, "wrote a new master key to %s (mode 0600): back it up; without it the data cannot be read\n", args[0])
			return nil
		},
	}
}

func newKeyRotateCmd(s streams) *cobra.Command {
	var (
		newKeyFile, stateDir string
		keys                 keyFlags
	)
	cmd := &cobra.Command{
		Use:   "rotate --new-key-file FILE",
		Short: "Re-wrap every volume's key under a new master key",
		Long: `Re-wrap every volume's key under the master key in --new-key-file (make one
with: securevol key generate FILE); the data is not re-encrypted. With serve
running on --state-dir, the daemon does it and its key file then holds the
new key. Without it, this command does it, taking the old key from the key
flags: with a key file, the new key then replaces it; with a passphrase or a
key command, start serve with --key-file pointing at the new key.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newKeyFile == "" {
				return usageError{errors.New("--new-key-file is required")}
			}
			spec, err := keys.spec(cmd.Flags(), nil)
			if err != nil {
				return err
			}
			res, err := daemon.RotateKey(cmd.Context(), daemon.RotateConfig{StateDir: stateDir, NewKeyFile: newKeyFile, Keys: spec})
			if err != nil {
				return err
			}
			if res.Online {
				fmt.Fprintf(s.out, "rotated: %d volumes re-wrapped by the running daemon; %s now holds the new key\n", res.Rewrapped, res.KeyFile)
				return nil
			}
			fmt.Fprintf(s.out, "rotated: %d volumes re-wrapped; %s now holds the new key\n", res.Rewrapped, res.KeyFile)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&newKeyFile, "new-key-file", "", "the new master key (make one with: securevol key generate FILE)")
	keys.register(fs, daemon.DefaultKeyFile, "the daemon's key file, replaced by the new key; without a daemon, also the old key")
	fs.StringVar(&stateDir, "state-dir", daemon.DefaultStateDir, "the daemon's state dir")
	withEnv(fs, "key-file", "passphrase-file", "key-command", "state-dir")
	return cmd
}
