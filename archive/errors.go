package archive

import "errors"

var (
	// ErrDamaged: the archive is not one Write made, or not any more: a
	// blob does not match its digest, something is missing or truncated,
	// or the stream holds an entry securevol never writes.
	ErrDamaged = errors.New("the archive is damaged or was tampered with")
	// ErrUnsupported: the backing folder holds an entry securevol never
	// makes (a bookkeeping file of the wrong type or size, a tree too
	// deep), so it cannot be archived as it is; fsck says more.
	ErrUnsupported = errors.New("the backing folder holds an entry securevol never makes")
	// ErrNotEmpty: the directory to write into holds something already.
	ErrNotEmpty = errors.New("the destination is not empty")
)
