package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// goFuseModule is the FUSE library, whose version matters when a mount
// misbehaves.
const goFuseModule = "github.com/hanwen/go-fuse/v2"

func newVersionCmd(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and build information (also: securevol --version)",
		Args:  exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprint(s.out, versionText())
			return err
		},
	}
}

// versionText is the version the Makefile stamped and what the Go
// toolchain recorded in the binary: module version, commit and whether the
// tree had changes, Go version, go-fuse version.
func versionText() string {
	bi, ok := debug.ReadBuildInfo()
	return formatVersion(version, bi, ok)
}

// formatVersion formats the stamped version v and the build information
// bi (ok false: none recorded).
func formatVersion(v string, bi *debug.BuildInfo, ok bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "securevol %s\n", v)
	if !ok {
		b.WriteString("no build information in this binary\n")
		return b.String()
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "  %-9s %s\n", k+":", v)
		}
	}
	line("module", strings.TrimSpace(bi.Main.Path+" "+bi.Main.Version))
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	commit := settings["vcs.revision"]
	if commit != "" && settings["vcs.modified"] == "true" {
		commit += " (dirty)"
	}
	line("commit", commit)
	line("committed", settings["vcs.time"])
	line("go", bi.GoVersion)
	for _, d := range bi.Deps {
		if d.Path == goFuseModule {
			if d.Replace != nil {
				d = d.Replace
			}
			line("go-fuse", d.Version)
		}
	}
	return b.String()
}
