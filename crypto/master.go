package crypto

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
)

// KeySize is the size in bytes of every symmetric key in securevol.
const KeySize = 32

// MasterKey is the key that wraps every volume key. It never prints its bytes.
type MasterKey struct {
	b [KeySize]byte
}

// NewMasterKey copies b (which must be KeySize bytes) into a MasterKey.
func NewMasterKey(b []byte) (*MasterKey, error) {
	if len(b) != KeySize {
		return nil, fmt.Errorf("master key must be %d bytes, got %d", KeySize, len(b))
	}
	k := &MasterKey{}
	copy(k.b[:], b)
	return k, nil
}

// RandomMasterKey returns a fresh random master key.
func RandomMasterKey() (*MasterKey, error) {
	k := &MasterKey{}
	if _, err := io.ReadFull(rand.Reader, k.b[:]); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return k, nil
}

// String and GoString keep the key out of logs and error messages.
func (k *MasterKey) String() string   { return "MasterKey(redacted)" }
func (k *MasterKey) GoString() string { return "MasterKey(redacted)" }

// Wipe zeroes the key bytes.
func (k *MasterKey) Wipe() { clear(k.b[:]) }

// Equal reports whether two master keys are the same.
func (k *MasterKey) Equal(o *MasterKey) bool { return o != nil && k.b == o.b }

// KDFParams are the (non-secret) Argon2id parameters that turn a passphrase
// into a master key. They are stored in each directory header.
type KDFParams struct {
	Algorithm string `json:"algorithm"` // always "argon2id"
	Salt      []byte `json:"salt"`      // 32 random bytes
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDFParams returns RFC 9106's second recommended Argon2id setting
// (t=3, m=64 MiB, p=4) with a fresh random salt.
func DefaultKDFParams() (*KDFParams, error) {
	salt := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, salt); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return &KDFParams{Algorithm: "argon2id", Salt: salt, Time: 3, MemoryKiB: 64 << 10, Threads: 4}, nil
}

// KDF bounds. The floor is RFC 9106's second recommended setting (t=3,
// 64 MiB): weaker parameters, which only a planted or hand-edited header
// could carry, would make a passphrase cheap to attack offline. The ceiling
// keeps a planted header from costing more than a few seconds and 1 GiB of
// memory per derivation.
const (
	MinKDFTime      = 3
	MinKDFMemoryKiB = 64 << 10
	MaxKDFTime      = 16
	MaxKDFMemoryKiB = 1 << 20
	MaxKDFThreads   = 16
	MinKDFSalt      = 16
	MaxKDFSalt      = 64
)

func (p *KDFParams) validate() error {
	switch {
	case p.Algorithm != "argon2id":
		return errors.New("unsupported KDF algorithm (this securevol knows argon2id)")
	case len(p.Salt) < MinKDFSalt || len(p.Salt) > MaxKDFSalt:
		return fmt.Errorf("KDF salt of %d bytes (want %d to %d)", len(p.Salt), MinKDFSalt, MaxKDFSalt)
	case p.Time < MinKDFTime || p.MemoryKiB < MinKDFMemoryKiB || p.Threads < 1:
		return fmt.Errorf("KDF parameters below the floor (t >= %d, m >= %d MiB, p >= 1)", MinKDFTime, MinKDFMemoryKiB>>10)
	case p.Time > MaxKDFTime || p.MemoryKiB > MaxKDFMemoryKiB || p.Threads > MaxKDFThreads:
		return fmt.Errorf("KDF parameters above the ceiling (t <= %d, m <= %d MiB, p <= %d): refusing to spend that much time or memory", MaxKDFTime, MaxKDFMemoryKiB>>10, MaxKDFThreads)
	}
	return nil
}

// DeriveMasterKey stretches a passphrase into a master key with Argon2id.
func DeriveMasterKey(passphrase []byte, p *KDFParams) (*MasterKey, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b := argon2.IDKey(passphrase, p.Salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
	defer clear(b)
	return NewMasterKey(b)
}
