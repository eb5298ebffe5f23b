package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"filippo.io/age"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/handover"
)

// Export, import and clone. The daemon snapshots a volume into an archive
// layout (package archive) and restores one into a new volume; moving the
// layout to a file or a registry is the command line's, on the host, where
// the registry credentials are. The two hand layouts to each other
// through transfer folders in the state dir, which both see: the managed
// plugin's state dir is the host's state mount.

// Transfer folder kinds, under the state dir.
const (
	ExportsDir = "exports" // layouts the daemon wrote, for the command line to read
	ImportsDir = "imports" // layouts the command line wrote, for the daemon to read
)

// cleanTransfers deletes the transfer folders left in stateDir when the
// daemon starts: those of commands cut short (a snapshot left behind would
// outlive its volume's removal, its key still wrapped under the master
// key). A command that runs across a restart of the daemon fails and is
// run again.
func cleanTransfers(stateDir string, log *logrus.Entry) {
	for _, kind := range []string{ExportsDir, ImportsDir} {
		ents, err := os.ReadDir(filepath.Join(stateDir, kind))
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(stateDir, kind, e.Name())
			if err := os.RemoveAll(p); err != nil {
				log.WithError(err).WithField("folder", p).Warn("cannot delete a transfer folder left from before")
				continue
			}
			log.WithField("folder", p).Info("deleted a transfer folder left by an export or import cut short")
		}
	}
}

// transferName is a transfer folder's name in a request: kind/<32 hex>.
var transferName = regexp.MustCompile(`^(` + ExportsDir + `|` + ImportsDir + `)/[0-9a-f]{32}$`)

// NewTransferDir picks a new transfer folder of kind under stateDir: its
// path, which does not exist yet (its parent does, mode 0700), and its
// name relative to stateDir, which requests carry.
func NewTransferDir(stateDir, kind string) (path, rel string, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("read random: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(stateDir, kind), 0o700); err != nil {
		return "", "", err
	}
	rel = kind + "/" + hex.EncodeToString(b)
	return filepath.Join(stateDir, rel), rel, nil
}

// TransferPath is the path of the transfer folder rel (as a request or an
// answer names it) of kind under stateDir; anything but kind/<32 hex
// digits is refused, so a request cannot point the daemon elsewhere.
func TransferPath(stateDir, kind, rel string) (string, error) {
	if !transferName.MatchString(rel) || !strings.HasPrefix(rel, kind+"/") {
		return "", fmt.Errorf("transfer folder %q: not %s/<32 hex digits>: %w", rel, kind, ErrBadRequest)
	}
	return filepath.Join(stateDir, rel), nil
}

// export is the admin call Export: a snapshot of the volume as an archive
// in a new exports folder, with a handover if recipients or a passphrase
// are given.
func (s *service) export(ctx context.Context, req *ExportRequest) (*ExportResult, error) {
	defer clear(req.Passphrase)
	recipients, err := parseRecipients(req.Recipients, req.Passphrase)
	if err != nil {
		return nil, err
	}
	var ex *handover.Export
	if recipients != nil {
		// Before the snapshot: a passphrase costs a second of scrypt,
		// which the volume's writers need not wait for.
		if ex, err = handover.NewExport(recipients); err != nil {
			return nil, err
		}
		defer ex.Wipe()
	}
	dir, rel, err := NewTransferDir(s.cfg.StateDir, ExportsDir)
	if err != nil {
		return nil, err
	}
	sum, err := s.snapshot(ctx, req.Name, dir, ex)
	if err != nil {
		return nil, err
	}
	s.log.WithFields(logrus.Fields{"volume": req.Name, "archive": rel, "manifest": sum.Manifest, "files": sum.Files,
		"bytes": sum.Bytes, "handover": ex != nil}).Info("exported volume")
	return &ExportResult{Dir: rel, Manifest: sum.Manifest, Files: sum.Files, Bytes: sum.Bytes, Chunks: sum.Chunks, Handover: ex != nil}, nil
}

// snapshot writes the volume name into a new archive layout at dir, its
// header sealed for ex's recipients (or, without ex, as it is: under the
// daemon's master key). On error nothing is left at dir.
func (s *service) snapshot(ctx context.Context, name, dir string, ex *handover.Export) (*archive.Summary, error) {
	var sum *archive.Summary
	err := s.drv.Snapshot(ctx, name, func(root *backing.Dir, h *crypto.Header, ks crypto.KeySource) error {
		opts := archive.WriteOptions{Meta: archive.Meta{Name: h.Name, CreatedAt: h.Created, Labels: h.Labels}}
		var err error
		if ex != nil {
			opts.Header, err = ex.Seal(h, ks)
			opts.Handover = ex.Blob
		} else {
			// The header Snapshot checked, whatever a key rotation
			// writes to the folder meanwhile.
			opts.Header, err = h.Marshal()
		}
		if err != nil {
			return err
		}
		sum, err = archive.Write(root, dir, opts)
		return err
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return sum, nil
}

// importVolume is the admin call Import: the archive in an imports folder
// becomes a new volume (driver.Import: authenticated, whole or not at
// all). Its header opens with the handover and the identities or
// passphrase given, or, without a handover, with the daemon's master key.
func (s *service) importVolume(_ context.Context, req *ImportRequest) (*ImportResult, error) {
	defer clear(req.Passphrase)
	dir, err := TransferPath(s.cfg.StateDir, ImportsDir, req.Dir)
	if err != nil {
		return nil, err
	}
	ids, err := parseIdentities(req.Identities, req.Passphrase)
	if err != nil {
		return nil, err
	}
	sum, err := s.restore(req.Name, dir, ids)
	if err != nil {
		return nil, err
	}
	s.log.WithFields(logrus.Fields{"volume": req.Name, "source": sum.Meta.Name, "manifest": sum.Manifest, "files": sum.Files,
		"handover": sum.Handover != nil}).Info("imported volume")
	return &ImportResult{Source: sum.Meta.Name, Manifest: sum.Manifest, Files: sum.Files, Bytes: sum.Bytes}, nil
}

// restore makes the archive layout at dir the new volume name.
func (s *service) restore(name, dir string, ids []age.Identity) (*archive.Summary, error) {
	var sum *archive.Summary
	err := s.drv.Import(name, func(root *backing.Dir) (crypto.KeySource, error) {
		var err error
		if sum, err = archive.Restore(dir, root); err != nil {
			return nil, err
		}
		switch {
		case sum.Handover == nil && ids == nil:
			return nil, nil // the daemon's own key opens it
		case sum.Handover == nil:
			return nil, fmt.Errorf("the archive has no handover: it opens only with the master key it was exported under: %w", ErrNoHandover)
		case ids == nil:
			return nil, fmt.Errorf("the archive's key is sealed to age recipients or a passphrase: %w", ErrNeedIdentity)
		}
		return handover.Open(sum.Handover, ids)
	})
	return sum, err
}

// clone is the admin call Clone: export and import in one, under the
// daemon's own key, through a transfer folder deleted afterwards.
func (s *service) clone(ctx context.Context, req *CloneRequest) (*CloneResult, error) {
	// Refused before the source is frozen; Import checks again.
	if _, err := s.drv.Get(&volume.GetRequest{Name: req.Name}); err == nil {
		return nil, fmt.Errorf("clone: volume %s already exists: %w", req.Name, driver.ErrConflict)
	}
	dir, _, err := NewTransferDir(s.cfg.StateDir, ExportsDir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if _, err := s.snapshot(ctx, req.Source, dir, nil); err != nil {
		return nil, fmt.Errorf("clone %s: %w", req.Source, err)
	}
	sum, err := s.restore(req.Name, dir, nil)
	if err != nil {
		return nil, err
	}
	s.log.WithFields(logrus.Fields{"volume": req.Name, "source": req.Source, "files": sum.Files}).Info("cloned volume")
	return &CloneResult{Files: sum.Files, Bytes: sum.Bytes}, nil
}

// parseRecipients reads the recipients of an export: age recipients (one
// per line, as in an age recipients file), or a passphrase; neither is no
// handover.
func parseRecipients(text string, pass []byte) ([]age.Recipient, error) {
	switch {
	case text != "" && len(pass) > 0:
		return nil, fmt.Errorf("recipients and a passphrase: age seals to a passphrase alone, give one or the other: %w", ErrBadRequest)
	case len(pass) > 0:
		r, err := age.NewScryptRecipient(string(pass))
		if err != nil {
			return nil, fmt.Errorf("export passphrase: %w", ErrBadRequest)
		}
		return []age.Recipient{r}, nil
	case strings.TrimSpace(text) != "":
		rs, err := age.ParseRecipients(strings.NewReader(text))
		if err != nil {
			// Recipients are public keys: age's message may quote them.
			return nil, fmt.Errorf("recipients: %v: %w", err, ErrBadRequest)
		}
		return rs, nil
	}
	return nil, nil
}

// parseIdentities reads what opens an import's handover: age identities
// (an identity file's contents) and a passphrase, either or both; neither
// is none.
func parseIdentities(text string, pass []byte) ([]age.Identity, error) {
	var ids []age.Identity
	if strings.TrimSpace(text) != "" {
		var err error
		if ids, err = age.ParseIdentities(strings.NewReader(text)); err != nil {
			// Never age's message: it may quote the secret key.
			return nil, fmt.Errorf("the identity file holds no valid age identities: %w", ErrBadRequest)
		}
	}
	if len(pass) > 0 {
		id, err := age.NewScryptIdentity(string(pass))
		if err != nil {
			return nil, fmt.Errorf("passphrase: %w", ErrBadRequest)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
