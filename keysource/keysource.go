// Package keysource chooses where a master key comes from, the same way
// for every command: a key file, a passphrase file, a key command, or a
// passphrase typed on a terminal when nothing else is given and one is
// there to ask.
//
// Errors wrap the sentinels below (or keyfile's); they say what is wrong,
// and the command line says which flag fixes it.
package keysource

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
)

// Kind names a master key source, as logs and Status show it. It is never
// the key itself.
type Kind string

const (
	KeyFile    Kind = "key file"
	Passphrase Kind = "passphrase" // from a file or typed on a terminal
	Command    Kind = "key command"
)

// Sentinels wrapped by this package's errors.
var (
	// ErrConflict: more than one source was given.
	ErrConflict = errors.New("more than one master key source given")
	// ErrNone: no source was given and there is no terminal to ask.
	ErrNone = errors.New("no master key source given")
	// ErrMismatch: the passphrase typed twice differed.
	ErrMismatch = errors.New("the passphrases typed differ")
	// ErrEmpty: an empty passphrase was typed, or the key command is empty.
	ErrEmpty = errors.New("empty")
	// ErrNoAnswer: the key command did not print a key in time.
	ErrNoAnswer = errors.New("no answer")
	// ErrNotAKey: the key command printed something that is not a key.
	ErrNotAKey = fmt.Errorf("not a %d-byte key (want raw bytes, 64 hex digits or base64)", crypto.KeySize)
)

// Spec is where the user said the master key comes from: at most one of
// KeyFile, PassphraseFile and Command; with none of them, Prompt (if not
// nil) asks for a passphrase.
type Spec struct {
	KeyFile        string // 32 raw bytes, mode 0600 (keyfile)
	PassphraseFile string // a passphrase, stretched with Argon2id
	Command        string // a program printing the key (see RunCommand)
	Prompt         Prompt // asks on a terminal; nil: never asks
	// Confirm asks for a typed passphrase twice (when it makes a new
	// directory: a typo would lock it for good).
	Confirm bool
}

// Kind says which source s names, or why it names none.
func (s Spec) Kind() (Kind, error) {
	var kinds []Kind
	if s.KeyFile != "" {
		kinds = append(kinds, KeyFile)
	}
	if s.PassphraseFile != "" {
		kinds = append(kinds, Passphrase)
	}
	if s.Command != "" {
		kinds = append(kinds, Command)
	}
	switch {
	case len(kinds) > 1:
		return "", ErrConflict
	case len(kinds) == 1:
		return kinds[0], nil
	case s.Prompt != nil:
		return Passphrase, nil
	}
	return "", ErrNone
}

// Secret is a loaded master key or passphrase. Clear it when done.
type Secret struct {
	Kind       Kind
	Key        *crypto.MasterKey // KeyFile and Command
	Passphrase []byte            // Passphrase
}

// Clear wipes the passphrase.
func (s *Secret) Clear() { clear(s.Passphrase) }

// KeySource is the secret as crypto's key source. A passphrase takes its
// KDF parameters from each header it opens and fresh ones for a new
// directory.
func (s *Secret) KeySource() (crypto.KeySource, error) {
	if s.Key != nil {
		return crypto.StaticKey{Key: s.Key}, nil
	}
	return crypto.NewPassphrase(s.Passphrase, nil)
}

// Load reads the secret from the source s names.
func (s Spec) Load() (*Secret, error) {
	kind, err := s.Kind()
	if err != nil {
		return nil, err
	}
	switch {
	case s.KeyFile != "":
		k, err := keyfile.LoadKeyFile(s.KeyFile)
		if err != nil {
			return nil, err
		}
		return &Secret{Kind: kind, Key: k}, nil
	case s.PassphraseFile != "":
		p, err := keyfile.ReadPassphraseFile(s.PassphraseFile)
		if err != nil {
			return nil, err
		}
		return &Secret{Kind: kind, Passphrase: p}, nil
	case s.Command != "":
		k, err := RunCommand(s.Command)
		if err != nil {
			return nil, err
		}
		return &Secret{Kind: kind, Key: k}, nil
	}
	p, err := s.ask()
	if err != nil {
		return nil, err
	}
	return &Secret{Kind: kind, Passphrase: p}, nil
}

// ask reads a passphrase through the prompt, twice if s.Confirm.
func (s Spec) ask() ([]byte, error) {
	p, err := s.Prompt("Passphrase")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("passphrase: %w", ErrEmpty)
	}
	if !s.Confirm {
		return p, nil
	}
	again, err := s.Prompt("Repeat passphrase")
	defer clear(again)
	if err != nil {
		clear(p)
		return nil, err
	}
	if !bytes.Equal(p, again) {
		clear(p)
		return nil, ErrMismatch
	}
	return p, nil
}
