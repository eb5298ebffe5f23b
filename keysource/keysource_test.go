package keysource

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
)

// typed is a prompt that answers from a list, as a person would type.
func typed(answers ...string) (Prompt, *[]string) {
	var asked []string
	return func(label string) ([]byte, error) {
		asked = append(asked, label)
		if len(answers) == 0 {
			return nil, errors.New("nothing more typed")
		}
		a := answers[0]
		answers = answers[1:]
		return []byte(a), nil
	}, &asked
}

func TestKind(t *testing.T) {
	ask, _ := typed()
	for _, tc := range []struct {
		name string
		spec Spec
		want Kind
		err  error
	}{
		{"key file", Spec{KeyFile: "/k"}, KeyFile, nil},
		{"passphrase file", Spec{PassphraseFile: "/p"}, Passphrase, nil},
		{"command", Spec{Command: "/bin/getkey"}, Command, nil},
		{"prompt", Spec{Prompt: ask}, Passphrase, nil},
		{"a file beats the prompt", Spec{KeyFile: "/k", Prompt: ask}, KeyFile, nil},
		{"none", Spec{}, "", ErrNone},
		{"two", Spec{KeyFile: "/k", Command: "x"}, "", ErrConflict},
		{"three", Spec{KeyFile: "/k", PassphraseFile: "/p", Command: "x"}, "", ErrConflict},
	} {
		got, err := tc.spec.Kind()
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%s: %q %v, want %q %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// Every source yields the same secret a directory was made with.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "master.key")
	if err := keyfile.GenerateKeyFile(keyPath); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(keyPath)
	want, _ := crypto.NewMasterKey(raw)
	passPath := filepath.Join(dir, "pass")
	os.WriteFile(passPath, []byte("horse staple\n"), 0o600)
	script := filepath.Join(dir, "getkey")
	os.WriteFile(script, []byte("#!/bin/sh\necho "+hex.EncodeToString(raw)+"\n"), 0o700)

	for _, tc := range []struct {
		name     string
		spec     Spec
		key      bool
		pass     string
		err      error
		asked    int
		typedIns []string
	}{
		{name: "key file", spec: Spec{KeyFile: keyPath}, key: true},
		{name: "command", spec: Spec{Command: script}, key: true},
		{name: "passphrase file", spec: Spec{PassphraseFile: passPath}, pass: "horse staple"},
		{name: "typed once", typedIns: []string{"typed words"}, pass: "typed words", asked: 1},
		{name: "typed twice", spec: Spec{Confirm: true}, typedIns: []string{"typed words", "typed words"}, pass: "typed words", asked: 2},
		{name: "typed twice, differently", spec: Spec{Confirm: true}, typedIns: []string{"typed words", "typed wrods"}, err: ErrMismatch, asked: 2},
		{name: "typed nothing", typedIns: []string{""}, err: ErrEmpty, asked: 1},
		{name: "a loose key file", spec: Spec{KeyFile: passPath}, err: keyfile.ErrKeySize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked *[]string
			if tc.typedIns != nil {
				tc.spec.Prompt, asked = typed(tc.typedIns...)
			}
			s, err := tc.spec.Load()
			if !errors.Is(err, tc.err) {
				t.Fatalf("Load: %v, want %v", err, tc.err)
			}
			if asked != nil && len(*asked) != tc.asked {
				t.Errorf("asked %d times (%v), want %d", len(*asked), *asked, tc.asked)
			}
			if err != nil {
				return
			}
			defer s.Clear()
			if tc.key && (s.Key == nil || !s.Key.Equal(want)) {
				t.Errorf("not the key file's key")
			}
			if !tc.key && !bytes.Equal(s.Passphrase, []byte(tc.pass)) {
				t.Errorf("passphrase %q, want %q", s.Passphrase, tc.pass)
			}
			ks, err := s.KeySource()
			if err != nil {
				t.Fatal(err)
			}
			if _, isPass := ks.(*crypto.Passphrase); isPass == tc.key {
				t.Errorf("key source %T for %s", ks, s.Kind)
			}
		})
	}
}
