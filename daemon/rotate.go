package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/keysource"
	"github.com/securevol/securevol/store"
)

// Rotation re-wraps every volume's key under a new master key (the data
// is not re-encrypted). bbolt lets one process hold the database, so with
// a daemon running the daemon rotates (the admin call RotateKey); without
// one, RotateKey does it itself. Either way the new key is written to
// <key-file>.new first and renamed over the key file last: a rotation
// stopped half-way is finished by the next start or the next rotation.

// RotateConfig configures RotateKey.
type RotateConfig struct {
	StateDir   string
	NewKeyFile string // the new master key (keyfile.GenerateKeyFile)
	// Keys is the old master key, used when no daemon runs. A Spec naming
	// none means DefaultKeyFile. With a key file, the new key replaces it;
	// with another source, the new key stays in NewKeyFile for the
	// daemon's next start to use.
	Keys keysource.Spec
	// Log receives the offline rotation's log; nil discards it.
	Log *logrus.Entry
}

// RotateKey re-wraps every volume under the key in cfg.NewKeyFile: through
// the daemon on cfg.StateDir if one runs, else offline.
func RotateKey(ctx context.Context, cfg RotateConfig) (*RotateKeyResult, error) {
	newRaw, newKey, err := loadKeyRaw(cfg.NewKeyFile)
	if err != nil {
		return nil, fmt.Errorf("the new key: %w", err)
	}
	defer clear(newRaw)
	c, err := Dial(cfg.StateDir)
	switch {
	case err == nil:
		defer c.Close()
		return c.RotateKey(ctx, newRaw)
	case !errors.Is(err, ErrNoDaemon):
		return nil, err
	}
	return rotateOffline(cfg, newRaw, newKey)
}

// rotateOffline rotates with no daemon running, holding the database's
// lock so none can start meanwhile.
func rotateOffline(cfg RotateConfig, newRaw []byte, newKey *crypto.MasterKey) (*RotateKeyResult, error) {
	if cfg.Log == nil {
		cfg.Log = discardLog()
	}
	// A cluster node's volumes are under the cluster root, and their
	// records in etcd: an offline rotation here would re-wrap none of
	// them and still replace the key file.
	if _, err := os.Stat(filepath.Join(cfg.StateDir, nodeLockName)); err == nil {
		return nil, fmt.Errorf("%s is a cluster node's state dir (%w): rotate through its running daemon, with the other nodes stopped", cfg.StateDir, ErrBadRequest)
	}
	st, err := store.Open(dbPath(cfg.StateDir), time.Second)
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%s: %w, but no daemon answers on %s", dbPath(cfg.StateDir), ErrRunning, AdminSocket(cfg.StateDir))
	}
	if err != nil {
		return nil, err
	}
	defer st.Close()
	spec := withDefaultKeyFile(cfg.Keys)
	spec.Prompt = nil
	if spec.KeyFile != "" && filepath.Clean(spec.KeyFile) == filepath.Clean(cfg.NewKeyFile) {
		return nil, ErrSameKeyFile
	}
	old, err := oldKeys(spec, newKey)
	if err != nil {
		return nil, err
	}
	drv, err := driver.New(driver.Config{StateDir: cfg.StateDir, MountRoot: filepath.Join(cfg.StateDir, "mnt"), Store: st, Keys: old, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	if spec.KeyFile == "" {
		// Nothing to replace: the new key stays where it is. A key of its
		// own, so the driver tells it from the copy among the old keys.
		k, err := crypto.NewMasterKey(newRaw)
		if err != nil {
			return nil, err
		}
		rep, err := drv.RotateKey(crypto.StaticKey{Key: k})
		if err != nil {
			return nil, err
		}
		return &RotateKeyResult{Rewrapped: rep.Rewrapped, KeyFile: cfg.NewKeyFile}, nil
	}
	n, err := rotateKeyFile(spec.KeyFile, newRaw, drv, cfg.Log)
	if err != nil {
		return nil, err
	}
	return &RotateKeyResult{Rewrapped: n, KeyFile: spec.KeyFile}, nil
}

// oldKeys are the keys an offline rotation may find volumes under: the
// old key; an earlier rotation's pending key (it may have re-wrapped some
// already); and the new key itself, for a rotation run again after it was
// cut short.
func oldKeys(spec keysource.Spec, newKey *crypto.MasterKey) ([]crypto.KeySource, error) {
	secret, err := spec.Load()
	if err != nil {
		return nil, fmt.Errorf("the old key: %w", err)
	}
	defer secret.Clear()
	ks, err := secret.KeySource()
	if err != nil {
		return nil, err
	}
	keys := []crypto.KeySource{ks}
	if spec.KeyFile != "" {
		if pk, err := keyfile.LoadKeyFile(pendingKeyFile(spec.KeyFile)); err == nil && !pk.Equal(newKey) {
			keys = append(keys, crypto.StaticKey{Key: pk})
		}
	}
	return append(keys, crypto.StaticKey{Key: newKey}), nil
}

// rotateKey is the admin call RotateKey.
func (s *service) rotateKey(_ context.Context, req *RotateKeyRequest) (*RotateKeyResult, error) {
	defer clear(req.Key)
	if len(req.Key) != crypto.KeySize {
		return nil, fmt.Errorf("the new key must be %d bytes: %w", crypto.KeySize, ErrBadRequest)
	}
	s.rotating.Lock()
	defer s.rotating.Unlock()
	if s.keys.kind != keysource.KeyFile {
		return nil, fmt.Errorf("the daemon takes its master key from a %s: %w", s.keys.kind, ErrKeySource)
	}
	if s.node != nil {
		// The other nodes keep the old key, and would no longer open
		// the folders re-wrapped under the new one.
		if err := s.node.Alone(); err != nil {
			return nil, fmt.Errorf("key rotation in cluster mode: %w; stop them first, then give them the new key file", err)
		}
	}
	n, err := rotateKeyFile(s.keys.keyFile, req.Key, s.drv, s.log)
	if err != nil {
		return nil, err
	}
	return &RotateKeyResult{Rewrapped: n, KeyFile: s.keys.keyFile, Online: true}, nil
}

// finishPendingRotation completes a rotation found cut short at start.
func (s *service) finishPendingRotation() {
	s.rotating.Lock()
	defer s.rotating.Unlock()
	raw, _, err := loadKeyRaw(pendingKeyFile(s.keys.keyFile))
	if err == nil {
		defer clear(raw)
		_, err = rotateKeyFile(s.keys.keyFile, raw, s.drv, s.log)
	}
	if err != nil {
		s.log.WithError(err).Error("finishing the interrupted key rotation failed; both keys stay in use; rotate again")
	}
}

// rotateKeyFile writes the new key beside the old one, re-wraps every
// folder, then renames the new key over the old.
func rotateKeyFile(keyFile string, raw []byte, drv *driver.Driver, log *logrus.Entry) (int, error) {
	k, err := crypto.NewMasterKey(raw)
	if err != nil {
		return 0, err
	}
	pending := pendingKeyFile(keyFile)
	if old, err := keyfile.LoadKeyFile(pending); err == nil && !old.Equal(k) {
		log.Warn("replacing the new key of an earlier, unfinished rotation")
	}
	if err := keyfile.WriteKeyFile(pending, raw); err != nil {
		return 0, err
	}
	rep, err := drv.RotateKey(crypto.StaticKey{Key: k})
	if err != nil {
		return 0, err
	}
	if err := keyfile.Install(pending, keyFile); err != nil {
		return 0, fmt.Errorf("volumes re-wrapped, but installing the new key file failed (it is %s; the next start finishes): %w", pending, err)
	}
	log.WithFields(logrus.Fields{"volumes": rep.Rewrapped, "key_file": keyFile}).Info("master key rotated; the old key opens nothing now")
	return rep.Rewrapped, nil
}

// loadKeyRaw reads a key file (checked as keyfile.LoadKeyFile checks it)
// and returns its bytes too, which the rotation copies into the daemon's
// key file.
func loadKeyRaw(path string) ([]byte, *crypto.MasterKey, error) {
	k, err := keyfile.LoadKeyFile(path)
	if err != nil {
		return nil, nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("key file: %w", err)
	}
	if k2, err := crypto.NewMasterKey(raw); err != nil || !k2.Equal(k) {
		clear(raw)
		return nil, nil, fmt.Errorf("key file %s changed while being read", path)
	}
	return raw, k, nil
}
