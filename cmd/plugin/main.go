// Command securevol is the Docker volume plugin daemon and its tools.
// Every command is defined in this package (flags, help, output); the work
// is done by the packages it calls: daemon, keysource, backing, cryptfs,
// fsck. `securevol --help` lists the commands, `securevol man DIR` writes
// their man pages.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/handover"
	"github.com/securevol/securevol/internal/logging"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/keysource"
	"github.com/securevol/securevol/store"
)

// version is set at build time by the Makefile (-X main.version=...).
var version = "dev"

// streams are the command's standard input, output and error.
type streams struct {
	in       *os.File
	out, err io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

// run runs the command line args and returns the exit status: 0, 1 for a
// failure, 2 for a command line that is wrong.
func run(args []string, s streams) int {
	root := newRootCmd(s, daemon.Run)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	fmt.Fprintf(s.err, "%s: %v%s\n", cmd.CommandPath(), err, hint(err))
	if isUsage(err) {
		fmt.Fprintf(s.err, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// usageError marks an error in the command line itself.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// isUsage reports whether err is the command line's fault.
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || errors.Is(err, keysource.ErrConflict) || errors.Is(err, keysource.ErrNone) ||
		errors.Is(err, logging.ErrLevel) || errors.Is(err, logging.ErrFormat)
}

// hint is the command-line fix for an error from a lower layer, which
// says what is wrong but not which command or flag fixes it.
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
		return "; open it with --passphrase-file (or type the passphrase: give no key flag, on a terminal)"
	case errors.Is(err, crypto.ErrNeedsRawKey):
		return "; open it with --key-file or --key-command"
	case errors.Is(err, keysource.ErrConflict):
		return ": give only one of --key-file, --passphrase-file and --key-command"
	case errors.Is(err, keysource.ErrNone):
		return ": give --key-file, --passphrase-file or --key-command (or run on a terminal to type a passphrase)"
	case errors.Is(err, store.ErrDamaged):
		return "; start with --rebuild: it moves the damaged file aside and rebuilds the database from the backing folders"
	case errors.Is(err, daemon.ErrRunning):
		return "; stop the other daemon first, or give another --state-dir"
	case errors.Is(err, daemon.ErrKeyMissing):
		return "; restore the key file from its backup"
	case errors.Is(err, daemon.ErrKeySource):
		return "; stop serve, run securevol key rotate with the same key flags as serve and --new-key-file NEW, then start serve with --key-file NEW"
	case errors.Is(err, daemon.ErrNeedIdentity):
		return "; give --identity FILE (the age identity of a recipient it was sealed to) or --passphrase-file FILE (the export passphrase)"
	case errors.Is(err, daemon.ErrNoHandover):
		return "; import it without --identity and --passphrase-file, on a daemon that has the master key it was exported under"
	case errors.Is(err, handover.ErrWrongIdentity):
		return "; the archive was sealed to other recipients or another passphrase"
	case errors.Is(err, archive.ErrDamaged):
		return "; export it again from the source"
	case errors.Is(err, daemon.ErrNoDaemon):
		return "; is securevol serve running on this --state-dir?"
	case errors.Is(err, daemon.ErrForbidden), errors.Is(err, os.ErrPermission) && os.Geteuid() != 0:
		return "; run it as root"
	}
	return ""
}
