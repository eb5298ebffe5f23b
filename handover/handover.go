// Package handover moves a volume's key to another master key without
// either master key travelling: the volume's header is re-wrapped under a
// fresh random export key, and the export key is encrypted with age
// (filippo.io/age) to the recipients' public keys or to an export
// passphrase (age's scrypt recipient). Whoever holds a matching identity
// or the passphrase opens the header with the export key and re-wraps it
// under their own master key; anyone else holds a header that opens with
// no key they have. docs/FORMAT.md describes the format.
//
// The package is pure: bytes in, bytes out. The volume key and the export
// key exist unwrapped only in memory.
package handover

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"

	"github.com/securevol/securevol/crypto"
)

// magic starts the plaintext of a handover: it names the format, so a
// blob of another kind that some identity happens to open is refused.
const magic = "securevol handover v1\n"

// maxBlob bounds a handover blob read: an age header with a stanza per
// recipient (about 200 bytes each) and the sealed key.
const maxBlob = 1 << 20

var (
	// ErrNoRecipients: Seal was given nobody to encrypt to.
	ErrNoRecipients = errors.New("no recipients for the handover")
	// ErrWrongIdentity: none of the identities (or passphrases) opens
	// the handover.
	ErrWrongIdentity = errors.New("none of the identities opens the archive's handover (wrong identity file or passphrase)")
	// ErrMalformed: the handover is not one Seal made (damaged, or
	// another age file).
	ErrMalformed = errors.New("the archive's handover is damaged or is not a securevol handover")
)

// Export is a handover being made: a fresh random export key, and Blob,
// the export key encrypted with age to the recipients. Making one costs
// what age costs (a passphrase: about a second of scrypt); sealing a
// header with it costs microseconds, so an export makes it before it
// holds the volume's writes.
type Export struct {
	key  *crypto.MasterKey
	Blob []byte // the handover blob, stored with the archive
}

// NewExport makes a fresh export key and encrypts it to recipients. age
// refuses a passphrase (scrypt) recipient together with others.
func NewExport(recipients []age.Recipient) (*Export, error) {
	if len(recipients) == 0 {
		return nil, ErrNoRecipients
	}
	raw := make([]byte, crypto.KeySize)
	defer clear(raw)
	if _, err := io.ReadFull(rand.Reader, raw); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	key, err := crypto.NewMasterKey(raw)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	w, err := age.Encrypt(&out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypt the export key: %w", err)
	}
	plain := append([]byte(magic), raw...)
	defer clear(plain)
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &Export{key: key, Blob: out.Bytes()}, nil
}

// Seal returns h, whose volume key ks opens, re-wrapped under the export
// key: the header to archive instead of the folder's own. It keeps h's
// name, ID and labels; only its wrapping changes, so it reveals what h
// reveals.
func (e *Export) Seal(h *crypto.Header, ks crypto.KeySource) ([]byte, error) {
	nh, _, err := h.Rewrap(ks, crypto.StaticKey{Key: e.key})
	if err != nil {
		return nil, fmt.Errorf("wrap the volume key under the export key: %w", err)
	}
	return nh.Marshal()
}

// Wipe forgets the export key.
func (e *Export) Wipe() { e.key.Wipe() }

// Open decrypts the handover blob with identities and returns the export
// key, which opens the archive's header.
func Open(blob []byte, identities []age.Identity) (crypto.KeySource, error) {
	if len(blob) > maxBlob {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(blob))
	}
	r, err := age.Decrypt(bytes.NewReader(blob), identities...)
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch), errors.Is(err, age.ErrIncorrectIdentity):
		return nil, ErrWrongIdentity
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, int64(len(magic)+crypto.KeySize+1)))
	defer clear(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	raw, ok := bytes.CutPrefix(plain, []byte(magic))
	if !ok || len(raw) != crypto.KeySize {
		return nil, ErrMalformed
	}
	export, err := crypto.NewMasterKey(raw)
	if err != nil {
		return nil, err
	}
	return crypto.StaticKey{Key: export}, nil
}
