package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/keysource"
	"github.com/securevol/securevol/store"
)

// masterKeys is the daemon's master key, as its Config chose it.
type masterKeys struct {
	kind    keysource.Kind
	keyFile string             // the key file, for kind keysource.KeyFile
	sources []crypto.KeySource // sources[0] wraps new volumes
	// pendingRotation is set when a rotation was cut short: its new key
	// (from <key-file>.new) leads sources and the rotation is finished
	// once the daemon serves.
	pendingRotation crypto.KeySource
}

// pendingKeyFile holds the new key while a rotation runs, so a rotation
// cut short is finished at the next start (see rotateKeyFile).
func pendingKeyFile(keyFile string) string { return keyFile + ".new" }

// metaKDF stores a passphrase's Argon2id parameters (salt included: not
// secret), so every start derives the same master key once instead of
// making a new salt, and so each volume needs no derivation of its own.
const metaKDF = "passphrase-kdf"

// loadKeys loads the master key cfg.Keys names; a key file that does not
// exist yet is generated, unless volumes exist that only it would open.
func loadKeys(cfg Config, st *store.Store) (*masterKeys, error) {
	kind, err := cfg.Keys.Kind()
	if err != nil {
		return nil, err
	}
	if kind == keysource.KeyFile {
		if err := generateKeyFile(cfg, st); err != nil {
			return nil, err
		}
	}
	secret, err := cfg.Keys.Load()
	if err != nil {
		return nil, err
	}
	defer secret.Clear()
	keys := &masterKeys{kind: kind, keyFile: cfg.Keys.KeyFile}
	switch kind {
	case keysource.Passphrase:
		p, err := passphraseSource(cfg.volumesRoot(), st, secret.Passphrase, cfg.Log)
		if err != nil {
			return nil, err
		}
		keys.sources = []crypto.KeySource{p}
		return keys, nil
	case keysource.Command:
		keys.sources = []crypto.KeySource{crypto.StaticKey{Key: secret.Key}}
		return keys, nil
	}
	keys.sources = []crypto.KeySource{crypto.StaticKey{Key: secret.Key}}
	pending := pendingKeyFile(keys.keyFile)
	nk, err := keyfile.LoadKeyFile(pending)
	switch {
	case err == nil:
		keys.pendingRotation = crypto.StaticKey{Key: nk}
		keys.sources = []crypto.KeySource{keys.pendingRotation, keys.sources[0]}
		cfg.Log.WithField("new_key_file", pending).Warn("a key rotation was cut short; it will be finished once the daemon is ready")
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("pending key rotation: %w", err)
	}
	return keys, nil
}

// generateKeyFile makes the key file on first start. A missing key file
// beside existing volumes is an error: a new key would open none of them.
func generateKeyFile(cfg Config, st *store.Store) error {
	path := cfg.Keys.KeyFile
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return nil // there, or unreadable: Load says which
	}
	if cfg.clustered() {
		return fmt.Errorf("%s: %w: in cluster mode every node needs the same key, so none is generated", path, ErrKeyMissing)
	}
	if n := volumesOnDisk(cfg.StateDir, st); n > 0 {
		return fmt.Errorf("%s: %w, but %s holds %d volumes that only it opens (a new key would open none of them)", path, ErrKeyMissing, cfg.StateDir, n)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if err := keyfile.GenerateKeyFile(path); err != nil {
		return err
	}
	cfg.Log.WithField("key_file", path).Warn("generated a new master key; it sits on the same host as the encrypted data, so anyone who copies both can read the volumes: keep a copy elsewhere (without it the volumes are lost) and consider a key command or a passphrase file")
	return nil
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
func passphraseSource(stateDir string, st *store.Store, pass []byte, log *logrus.Entry) (*crypto.Passphrase, error) {
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
	p, tried := adoptKDF(filepath.Join(stateDir, "volumes"), pass)
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
