// Command securevol is the Docker volume plugin daemon and its tools.
//
//	securevol serve                 run the volume plugin daemon
//	securevol key generate FILE     write a new random master key
//	securevol key rotate ...        re-wrap every volume's key under a new master key
//	securevol init DIR              make DIR an encrypted directory
//	securevol mount DIR MOUNTPOINT  mount an encrypted directory (foreground)
//	securevol fsck DIR              authenticate every name and block
//	securevol version
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
)

// version is set at build time by the Makefile.
var version = "dev"

// errUsage marks errors for which the usage text helps.
var errUsage = errors.New("usage")

type command struct {
	name  string
	usage string
	run   func(args []string) error
}

func commands() []command {
	return []command{
		{"serve", "serve [flags]                 run the Docker volume plugin daemon", runServe},
		{"key", "key generate FILE | key rotate --new-key-file F", runKey},
		{"init", "init (--key-file F | --passphrase-file F) DIR", runInit},
		{"mount", "mount (--key-file F | --passphrase-file F) DIR MOUNTPOINT", runMount},
		{"fsck", "fsck (--key-file F | --passphrase-file F) DIR", runFsck},
		{"version", "version", func([]string) error { fmt.Println("securevol", version); return nil }},
	}
}

func usage() string {
	s := "usage: securevol COMMAND [flags]\n\ncommands:\n"
	for _, c := range commands() {
		s += "  " + c.usage + "\n"
	}
	return s
}

// hint is the command-line fix for an error from a lower layer, which
// says what is wrong but not which command fixes it.
func hint(err error) string {
	var kf *keyfile.Error
	isKF := errors.As(err, &kf)
	switch {
	case isKF && errors.Is(err, keyfile.ErrPerms):
		return "; run: chmod 600 " + kf.Path
	case isKF && errors.Is(err, keyfile.ErrOwner):
		return fmt.Sprintf("; it must belong to root or to uid %d (the user securevol runs as): chown it", os.Geteuid())
	case isKF && errors.Is(err, keyfile.ErrKeySize):
		return "; create a key file with: securevol key generate FILE"
	case errors.Is(err, crypto.ErrNeedsPassphrase):
		return "; open it with --passphrase-file"
	case errors.Is(err, crypto.ErrNeedsRawKey):
		return "; open it with --key-file"
	}
	return ""
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage())
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(os.Stderr, "securevol %s: %v\nusage: securevol %s\n", c.name, err, c.usage)
			return 2
		default:
			fmt.Fprintf(os.Stderr, "securevol %s: %v%s\n", c.name, err, hint(err))
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "securevol: unknown command %q\n\n%s", args[0], usage())
	return 2
}
