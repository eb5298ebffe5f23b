package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/store"
)

// daemonKeys is the daemon's master key source, as chosen by its flags.
type daemonKeys struct {
	kind    string             // "key file", "passphrase" or "key command"
	sources []crypto.KeySource // sources[0] wraps new volumes
	// pendingRotation is set when a rotation was cut short: its new key
	// (from <key-file>.new) leads sources and the rotation is finished
	// after the socket opens.
	pendingRotation crypto.KeySource
}

// pendingKeyFile holds the new key while a rotation runs, so a rotation
// cut short is finished at the next start (see admin.rotate).
func pendingKeyFile(keyFile string) string { return keyFile + ".new" }

// metaKDF stores a passphrase's Argon2id parameters (salt included: not
// secret), so every start derives the same master key once instead of
// making a new salt, and so each volume needs no derivation of its own.
const metaKDF = "passphrase-kdf"

func loadKeys(c *serveConfig, st *store.Store, log *logrus.Entry) (*daemonKeys, error) {
	switch {
	case c.passFile != "":
		pass, err := keyfile.ReadPassphraseFile(c.passFile)
		if err != nil {
			return nil, err
		}
		defer clear(pass)
		p, err := passphraseSource(c, st, pass, log)
		if err != nil {
			return nil, err
		}
		return &daemonKeys{kind: "passphrase", sources: []crypto.KeySource{p}}, nil
	case c.keyCommand != "":
		k, err := runKeyCommand(c.keyCommand)
		if err != nil {
			return nil, err
		}
		return &daemonKeys{kind: "key command", sources: []crypto.KeySource{crypto.StaticKey{Key: k}}}, nil
	}

	k, err := keyfile.LoadKeyFile(c.keyFile)
	if errors.Is(err, os.ErrNotExist) {
		if n := volumesOnDisk(c.stateDir, st); n > 0 {
			return nil, fmt.Errorf("key file %s is missing but %s holds %d volumes that only it opens: restore the key file (a new key would open none of them)", c.keyFile, c.stateDir, n)
		}
		if err := os.MkdirAll(filepath.Dir(c.keyFile), 0o700); err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		if err := keyfile.GenerateKeyFile(c.keyFile); err != nil {
			return nil, err
		}
		log.WithField("key_file", c.keyFile).Warn("generated a new master key; it sits on the same host as the encrypted data, so anyone who copies both can read the volumes: keep a copy elsewhere (without it the volumes are lost) and consider --key-command or --passphrase-file")
		k, err = keyfile.LoadKeyFile(c.keyFile)
	}
	if err != nil {
		return nil, err
	}
	keys := &daemonKeys{kind: "key file", sources: []crypto.KeySource{crypto.StaticKey{Key: k}}}
	pending := pendingKeyFile(c.keyFile)
	nk, err := keyfile.LoadKeyFile(pending)
	switch {
	case err == nil:
		keys.pendingRotation = crypto.StaticKey{Key: nk}
		keys.sources = []crypto.KeySource{keys.pendingRotation, keys.sources[0]}
		log.WithField("new_key_file", pending).Warn("a key rotation was cut short; it will be finished once the daemon is ready")
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("pending key rotation: %w", err)
	}
	return keys, nil
}

// volumesOnDisk counts what a missing key would orphan: records and
// backing folders.
func volumesOnDisk(stateDir string, st *store.Store) int {
	n := 0
	st.View(func(tx *store.Tx) error { n = tx.Count(); return nil })
	if ents, err := os.ReadDir(filepath.Join(stateDir, "volumes")); err == nil {
		n = max(n, len(ents))
	}
	return n
}

// passphraseSource makes the daemon's passphrase key source. Its Argon2id
// parameters (salt included) are those stored in the database; else those
// of an existing volume (a rebuilt database), adopted only once the
// passphrase derived with them opens that volume's header, so a planted
// header cannot choose them; else fresh ones. The parameters used are
// stored, so every start derives the same key. The key is derived here: a
// wrong passphrase should show at start, and the engine's first Get must
// not wait for Argon2id.
func passphraseSource(c *serveConfig, st *store.Store, pass []byte, log *logrus.Entry) (*crypto.Passphrase, error) {
	var stored []byte
	st.View(func(tx *store.Tx) error { stored = tx.Meta(metaKDF); return nil })
	if stored != nil {
		params := &crypto.KDFParams{}
		if err := json.Unmarshal(stored, params); err != nil {
			return nil, fmt.Errorf("stored passphrase KDF parameters: %w", err)
		}
		p, err := crypto.NewPassphrase(pass, params)
		if err != nil {
			return nil, fmt.Errorf("stored passphrase KDF parameters: %w", err)
		}
		if _, err := p.MasterKey(params); err != nil {
			return nil, err
		}
		return p, nil
	}
	p, tried := adoptKDF(filepath.Join(c.stateDir, "volumes"), pass)
	if p == nil {
		var err error
		if p, err = crypto.NewPassphrase(pass, nil); err != nil {
			return nil, err
		}
		if _, err := p.MasterKey(p.NewKDF()); err != nil {
			return nil, err
		}
		if tried > 0 {
			// Most likely a wrong passphrase: keep the fresh parameters
			// out of the database, so the right one adopts the volumes'.
			log.WithField("tried", tried).Warn("the passphrase opens none of the existing volumes tried; their KDF parameters were not adopted (wrong passphrase?)")
			return p, nil
		}
	}
	b, err := json.Marshal(p.NewKDF())
	if err != nil {
		return nil, err
	}
	if err := st.Update(func(tx *store.Tx) error { return tx.SetMeta(metaKDF, b) }); err != nil {
		return nil, err
	}
	return p, nil
}

// maxKDFTries bounds the Argon2id derivations spent looking for parameters
// to adopt (each costs up to the KDF ceiling).
const maxKDFTries = 3

// adoptKDF returns a passphrase source with the KDF parameters of the
// first volume in volDir whose header the passphrase opens with them, or
// nil; tried counts the parameter sets derived.
func adoptKDF(volDir string, pass []byte) (p *crypto.Passphrase, tried int) {
	ents, err := os.ReadDir(volDir)
	if err != nil {
		return nil, 0
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if tried == maxKDFTries {
			break
		}
		h, err := backing.ReadHeaderAt(filepath.Join(volDir, e.Name()))
		if err != nil || h.KDF == nil {
			continue
		}
		id := fmt.Sprint(*h.KDF)
		if seen[id] {
			continue
		}
		seen[id] = true
		cand, err := crypto.NewPassphrase(pass, h.KDF)
		if err != nil {
			continue // outside the floor or ceiling: never adopted
		}
		tried++
		if _, err := h.Open(cand); err == nil {
			return cand, tried
		}
	}
	return nil, tried
}

// keyCommandTimeout bounds --key-command: the engine gives a managed plugin
// only seconds to start listening.
const keyCommandTimeout = 5 * time.Second

// keyCommandWaitDelay is how long the output is still read after the
// program exited or was killed.
const keyCommandWaitDelay = time.Second

// runKeyCommand runs the --key-command program (split on spaces; no shell,
// which a FROM-scratch plugin image does not have) and reads the master key
// from its standard output: exactly 32 raw bytes, or 64 hex digits, or the
// standard or URL-safe base64 of 32 bytes (surrounding whitespace ignored).
// Its standard error goes to ours; its output never appears in messages.
//
// The program gets exactly the admin's arguments, which any local user can
// read in the process list, so they are documented as not secret: nothing
// of ours is added to them. It gets no input (stdin is /dev/null) and the
// daemon's environment, which holds no secret of ours; that is where, or
// in a file, a credential for a secret manager belongs.
func runKeyCommand(command string) (*crypto.MasterKey, error) {
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return nil, errors.New("--key-command is empty")
	}
	ctx, cancel := context.WithTimeout(context.Background(), keyCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: 4096}
	// A process the program leaves behind (a background helper) may keep
	// its output open; Wait would wait for that process too, past the
	// timeout. Stop reading shortly after the program exits or is killed.
	cmd.WaitDelay = keyCommandWaitDelay
	err := cmd.Run()
	defer clear(out.Bytes())
	if ctx.Err() != nil {
		return nil, fmt.Errorf("key command %s: no answer within %v", argv[0], keyCommandTimeout)
	}
	// ErrWaitDelay: the program succeeded and what it printed is read.
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, fmt.Errorf("key command %s: %w", argv[0], err)
	}
	raw, err := decodeKey(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("key command %s: %w", argv[0], err)
	}
	defer clear(raw)
	return crypto.NewMasterKey(raw)
}

// decodeKey accepts a key as 32 raw bytes, 64 hex digits or base64.
func decodeKey(b []byte) ([]byte, error) {
	if len(b) == crypto.KeySize || (len(b) == crypto.KeySize+1 && b[crypto.KeySize] == '\n') {
		return append([]byte(nil), b[:crypto.KeySize]...), nil
	}
	s := strings.TrimSpace(string(b))
	if len(s) == 2*crypto.KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == crypto.KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("printed %d bytes that are not a %d-byte key (want raw bytes, 64 hex digits or base64)", len(b), crypto.KeySize)
}

// limitedWriter keeps the first n bytes; a runaway program can't fill memory.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	l.w.Write(q)
	return len(p), nil
}
