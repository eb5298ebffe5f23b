package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/securevol/securevol/keysource"
)

// keyFlags name the master key: the same three flags on every command
// that needs one.
type keyFlags struct {
	keyFile, passFile, command string
}

// register adds the flags. defKeyFile is the key file used when none of
// them is given ("" for none), and genNote what happens if it is missing.
func (k *keyFlags) register(fs *pflag.FlagSet, defKeyFile, genNote string) {
	usage := "file holding the 32-byte master key, mode 0600 (securevol key generate)"
	if genNote != "" {
		usage += "; " + genNote
	}
	fs.StringVar(&k.keyFile, "key-file", defKeyFile, usage)
	fs.StringVar(&k.passFile, "passphrase-file", "", "derive the master key from the passphrase in this file (Argon2id) instead")
	fs.StringVar(&k.command, "key-command", "", "run this program (split on spaces, no shell) and use the key it prints: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes; this command line is not secret (every local user sees it in the process list): the program reads its credentials from a file or its environment")
}

// spec is the key source the flags name. The key file counts only when
// given (on the command line or by its variable): its default applies when
// no source is given at all. prompt asks for a passphrase when no flag is
// given (nil: never).
func (k *keyFlags) spec(fs *pflag.FlagSet, prompt keysource.Prompt) (keysource.Spec, error) {
	s := keysource.Spec{PassphraseFile: k.passFile, Command: k.command, Prompt: prompt}
	if fs.Changed("key-file") {
		s.KeyFile = k.keyFile
	}
	if _, err := s.Kind(); err != nil && !errors.Is(err, keysource.ErrNone) {
		return s, usageError{err}
	}
	return s, nil
}
