package daemon

import "errors"

// Sentinels of this package. The admin protocol carries them by code (see
// wireErrors), so a Client's error matches them with errors.Is as the
// daemon's did.
var (
	// ErrNoDaemon: no daemon answers on the state dir's admin socket.
	ErrNoDaemon = errors.New("no securevol daemon answers")
	// ErrRunning: another daemon holds the state dir's database.
	ErrRunning = errors.New("another securevol daemon uses this state dir")
	// ErrForbidden: the admin caller is not root.
	ErrForbidden = errors.New("only root may use the admin socket")
	// ErrBadRequest: an admin request that is malformed or invalid.
	ErrBadRequest = errors.New("bad request")
	// ErrTooLarge: an admin request body over maxAdminRequest.
	ErrTooLarge = errors.New("request too large")
	// ErrNoSuchVolume: no volume has the name asked for.
	ErrNoSuchVolume = errors.New("no such volume")
	// ErrKeySource: the daemon's master key does not come from a key file,
	// which a rotation through the daemon would replace.
	ErrKeySource = errors.New("the daemon's master key source cannot be rotated while it runs")
	// ErrKeyMissing: the key file is gone while volumes need it.
	ErrKeyMissing = errors.New("key file missing")
	// ErrBadConfig: a Config value that can never work.
	ErrBadConfig = errors.New("invalid daemon configuration")
	// ErrNoHandover: identities or a passphrase were given for an
	// archive without handover.
	ErrNoHandover = errors.New("the archive has no handover")
	// ErrNeedIdentity: an archive with a handover, and nothing to open it.
	ErrNeedIdentity = errors.New("an identity or passphrase is needed")
	// ErrSameKeyFile: the new key file is the old one.
	ErrSameKeyFile = errors.New("the new key file is the old key file")
)
