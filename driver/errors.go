package driver

import (
	"errors"
	"fmt"
)

// Error classes, in the manner of moby's errdefs: the errors the driver
// answers belong to one of these, tested with errors.Is, so a caller (the
// daemon's admin socket, the command line) can tell "no such volume" from
// "try again" without reading messages. The messages themselves say what
// to do in Docker's words; hints about securevol's own command line are
// the command's to add.
var (
	// ErrNotFound: no volume (or no removed volume, or no reference) by
	// that name.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request contradicts the volume's state: it exists
	// with other options, is in use, or is being removed.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a name, option or argument that can never be valid.
	ErrInvalid = errors.New("invalid parameter")
	// ErrUnavailable: the daemon cannot serve the request now: it is
	// shutting down, another request holds the volume, a key rotation
	// runs, or the master key does not open the volumes.
	ErrUnavailable = errors.New("unavailable")
)

// classError is an error of a class. Its message is its own: the class
// only answers errors.Is.
type classError struct {
	class error
	err   error
}

func (e *classError) Error() string        { return e.err.Error() }
func (e *classError) Unwrap() error        { return e.err }
func (e *classError) Is(target error) bool { return target == e.class }

// classed formats an error (%w wraps as in fmt.Errorf) of class.
func classed(class error, format string, a ...any) error {
	return &classError{class: class, err: fmt.Errorf(format, a...)}
}

// noSuchVolume is the answer for an unknown name: the engine reads "no
// such volume" from Get as "not mine" (moby's volume store).
func noSuchVolume(name string) error {
	return classed(ErrNotFound, "volume %s: no such volume", name)
}

// errClosing refuses requests that arrive while the driver shuts down.
var errClosing = classed(ErrUnavailable, "the securevol plugin is shutting down; try again when it is back")

// errKeyMismatch: no master key source opens a volume's header.
var errKeyMismatch = classed(ErrUnavailable, "the daemon's master key does not open this volume (was it created under another key, or were its header's ID or name changed?)")

// errCreatedElsewhere: another node created the volume while this one
// was creating it (cluster mode).
var errCreatedElsewhere = errors.New("the volume was created meanwhile on another node")

// errWrongFolder: a folder's authenticated name is another volume's.
var errWrongFolder = errors.New("the backing folder does not match the volume")
