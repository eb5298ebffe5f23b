package crypto

import "errors"

// KeySource yields the master key for a directory. KDF parameters are read
// from each directory's header, so a passphrase source can open directories
// created with different salts.
type KeySource interface {
	// MasterKey returns the master key for a header whose KDF field is kdf
	// (nil for directories created with a raw key).
	MasterKey(kdf *KDFParams) (*MasterKey, error)
	// NewKDF is what to record in a new header (nil for raw keys).
	NewKDF() *KDFParams
}

// ErrNeedsPassphrase and ErrNeedsRawKey mean a directory was created with
// the other kind of master key.
var (
	ErrNeedsPassphrase = errors.New("this directory's master key is derived from a passphrase, not a raw key")
	ErrNeedsRawKey     = errors.New("this directory's master key is a raw key (key file), not a passphrase")
)

// StaticKey is a KeySource holding one raw master key (a key file).
type StaticKey struct{ Key *MasterKey }

func (s StaticKey) MasterKey(kdf *KDFParams) (*MasterKey, error) {
	if kdf != nil {
		return nil, ErrNeedsPassphrase
	}
	return s.Key, nil
}
func (s StaticKey) NewKDF() *KDFParams { return nil }

// Passphrase is a KeySource that stretches a passphrase with Argon2id. The
// result for each salt is cached, so opening many directories that share the
// daemon's salt costs one derivation.
type Passphrase struct {
	pass   []byte
	params *KDFParams
	cache  *kdfCache
}

// NewPassphrase makes a passphrase source. params is recorded in new
// directories; nil means DefaultKDFParams.
func NewPassphrase(pass []byte, params *KDFParams) (*Passphrase, error) {
	if params == nil {
		var err error
		if params, err = DefaultKDFParams(); err != nil {
			return nil, err
		}
	}
	if err := params.validate(); err != nil {
		return nil, err
	}
	return &Passphrase{pass: append([]byte(nil), pass...), params: params, cache: newKDFCache()}, nil
}

func (p *Passphrase) NewKDF() *KDFParams { return p.params }

func (p *Passphrase) MasterKey(kdf *KDFParams) (*MasterKey, error) {
	if kdf == nil {
		return nil, ErrNeedsRawKey
	}
	return p.cache.get(kdf, func() (*MasterKey, error) { return DeriveMasterKey(p.pass, kdf) })
}
