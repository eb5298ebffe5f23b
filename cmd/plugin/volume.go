package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/securevol/securevol/daemon"
)

// The volume commands ask the running daemon, over its root-only admin
// socket in the state dir.

func newVolumeCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Look at the running daemon's volumes (as root)",
		Args:  subcommandArgs,
		RunE:  needSubcommand,
	}
	var stateDir string
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", daemon.DefaultStateDir, "the daemon's state dir, which holds its admin socket")
	withEnv(cmd.PersistentFlags(), "state-dir")
	cmd.AddCommand(newVolumeLsCmd(s, &stateDir), newVolumeInspectCmd(s, &stateDir))
	return cmd
}

func newVolumeLsCmd(s streams, stateDir *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the volumes: name, creation, references, state",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := daemon.Dial(*stateDir)
			if err != nil {
				return err
			}
			defer c.Close()
			vols, err := c.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(s.out, vols)
			}
			return printTable(s.out, vols)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (as volume inspect does) instead of a table")
	return cmd
}

func newVolumeInspectCmd(s streams, stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Print the volumes' facts as JSON (never key material)",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("want at least one volume name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := daemon.Dial(*stateDir)
			if err != nil {
				return err
			}
			defer c.Close()
			vols := []daemon.VolumeInfo{}
			var errs []error
			for _, name := range args {
				v, err := c.Volume(cmd.Context(), name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				vols = append(vols, *v)
			}
			if err := printJSON(s.out, vols); err != nil {
				return err
			}
			return errors.Join(errs...)
		},
	}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printTable prints one line per volume, with the Status facts an operator
// looks for first.
func printTable(w io.Writer, vols []daemon.VolumeInfo) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED\tMOUNTS\tMOUNTED\tSTATE")
	for _, v := range vols {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.CreatedAt, fact(v, "mounts"), fact(v, "mounted"), fact(v, "state"))
	}
	return tw.Flush()
}

// fact is one Status fact as text, "-" if absent.
func fact(v daemon.VolumeInfo, key string) string {
	x, ok := v.Status[key]
	if !ok {
		return "-"
	}
	return fmt.Sprint(x)
}
