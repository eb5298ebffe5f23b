package keysource

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// Prompt asks for a passphrase, showing label.
type Prompt func(label string) ([]byte, error)

// Terminal returns a Prompt that reads a line from in without echo and
// shows its label on out, or nil if in is not a terminal: a passphrase is
// never read from a pipe, where a script would have to hold it (use a
// passphrase file there).
func Terminal(in *os.File, out io.Writer) Prompt {
	fd := int(in.Fd())
	if !term.IsTerminal(fd) {
		return nil
	}
	return func(label string) ([]byte, error) {
		fmt.Fprintf(out, "%s: ", label)
		p, err := term.ReadPassword(fd)
		fmt.Fprintln(out) // the Enter typed was not echoed
		if err != nil {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		return p, nil
	}
}
