package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/securevol/securevol/daemon"
)

// The volume commands ask the running daemon, over its root-only admin
// socket in the state dir.

func newVolumeCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Look after the running daemon's volumes (as root)",
		Args:  subcommandArgs,
		RunE:  needSubcommand,
	}
	var stateDir string
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", daemon.DefaultStateDir, "the daemon's state dir, which holds its admin socket")
	withEnv(cmd.PersistentFlags(), "state-dir")
	cmd.AddCommand(newVolumeLsCmd(s, &stateDir), newVolumeInspectCmd(s, &stateDir),
		newVolumeReleaseCmd(s, &stateDir), newVolumeRemovedCmd(s, &stateDir), newVolumeUndeleteCmd(s, &stateDir),
		newVolumeExportCmd(s, &stateDir), newVolumeImportCmd(s, &stateDir), newVolumeCloneCmd(s, &stateDir),
		newVolumePushCmd(s, &stateDir), newVolumePullCmd(s, &stateDir))
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
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				vols, err := c.Volumes(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(s.out, vols)
				}
				return printTable(s.out, vols)
			})
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
			return withDaemon(*stateDir, func(c *daemon.Client) error {
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
			})
		},
	}
}

func newVolumeReleaseCmd(s streams, stateDir *string) *cobra.Command {
	var mountID string
	cmd := &cobra.Command{
		Use:   "release NAME",
		Short: "Drop a volume's stale mount references, so it can be removed",
		Long: `Drop the mount references of a volume that no container holds any more:
those of one mount ID (--mount-id; 'securevol volume inspect' lists them), or
all of them. A Mount whose answer the engine lost leaves such a reference,
and a referenced volume cannot be removed. With no reference left the volume
is unmounted: release only references whose containers are gone.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				n, err := c.Release(cmd.Context(), args[0], mountID)
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "released %d reference(s) of %s\n", n, args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&mountID, "mount-id", "", "drop only this mount ID's references")
	return cmd
}

func newVolumeRemovedCmd(s streams, stateDir *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "removed",
		Short: "List the volumes removed within their grace period (serve --remove-grace)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				vols, err := c.Removed(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(s.out, vols)
				}
				tw := tabwriter.NewWriter(s.out, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tID\tREMOVED\tPURGE AT")
				for _, v := range vols {
					purge := v.PurgeAt.Format(time.RFC3339)
					if v.Purging {
						purge = "purging now"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.ID, v.RemovedAt.Format(time.RFC3339), purge)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func newVolumeUndeleteCmd(s streams, stateDir *string) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "undelete NAME",
		Short: "Bring back a volume removed within its grace period",
		Long: `Bring back a volume that 'docker volume rm' removed while the daemon runs
with --remove-grace, before its purge time ('securevol volume removed' lists
them). Its name must be free: remove a newer volume of that name first. When
several removed volumes share the name, --id picks one.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				if err := c.Undelete(cmd.Context(), args[0], id); err != nil {
					return err
				}
				fmt.Fprintf(s.out, "%s is back; 'docker volume ls' shows it again\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the removed volume's ID, when several share the name")
	return cmd
}

// withDaemon runs fn with a client of the daemon on stateDir.
func withDaemon(stateDir string, fn func(*daemon.Client) error) error {
	c, err := daemon.Dial(stateDir)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
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
