package daemon

import (
	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/cluster"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/handover"
)

// The admin protocol: each call is POST /Admin.<name> on the admin socket
// with its request as JSON. The answer is its result as JSON (200), or an
// errorReply (4xx, 5xx). Only root may call (the socket is 0600 root and
// the peer's credentials are checked again).
//
// To add a call: name it here, give it request and result types, register
// its handler in (*service).routes, and add a Client method that calls it.
const (
	callRotateKey = "RotateKey"
	callVolumes   = "Volumes"
	callVolume    = "Volume"
	callRelease   = "Release"
	callRemoved   = "Removed"
	callUndelete  = "Undelete"
	callExport    = "Export"
	callImport    = "Import"
	callClone     = "Clone"
)

// RotateKeyRequest hands the daemon a new master key.
type RotateKeyRequest struct {
	Key []byte // the new master key (base64 in JSON); travels only over the 0600 socket
}

// RotateKeyResult says what a rotation did.
type RotateKeyResult struct {
	Rewrapped int    // volumes whose key is now wrapped by the new master key
	KeyFile   string // the file that holds the new key now
	Online    bool   // the running daemon rotated (else RotateKey did, offline)
}

// VolumesRequest asks for every volume.
type VolumesRequest struct{}

// VolumesResult lists the volumes, by name.
type VolumesResult struct {
	Volumes []VolumeInfo
}

// VolumeRequest asks for one volume.
type VolumeRequest struct {
	Name string
}

// VolumeInfo is what the daemon tells about a volume: what the engine
// sees (docker volume inspect), never key material.
type VolumeInfo struct {
	Name       string         `json:"name"`
	CreatedAt  string         `json:"created_at"`           // RFC 3339
	Mountpoint string         `json:"mountpoint,omitempty"` // set while mounted
	Status     map[string]any `json:"status"`               // the driver's facts: id, mounts, state, format, ...
	// References counts the mount references by the engine's mount ID
	// (one per container mount point): what volume release takes.
	References map[string]int `json:"references,omitempty"`
}

// ReleaseRequest drops a volume's stale mount references: those of
// MountID, or all of them when it is "".
type ReleaseRequest struct {
	Name    string
	MountID string `json:",omitempty"`
}

// ReleaseResult says how many references were dropped.
type ReleaseResult struct {
	Released int
}

// RemovedRequest asks for the volumes removed within their grace period.
type RemovedRequest struct{}

// RemovedResult lists them, by name and removal time.
type RemovedResult struct {
	Volumes []driver.RemovedVolume
}

// UndeleteRequest brings a volume removed within its grace period back:
// the one named Name, or, when several removed volumes share the name,
// the one whose folder is ID.
type UndeleteRequest struct {
	Name string
	ID   string `json:",omitempty"`
}

// UndeleteResult is empty: the volume is back under its name.
type UndeleteResult struct{}

// ExportRequest asks for a snapshot of the volume Name as an archive (see
// transfer.go). With Recipients or Passphrase its key travels in a
// handover only they open; without, it stays wrapped under the daemon's
// master key.
type ExportRequest struct {
	Name       string
	Recipients string `json:",omitempty"` // age recipients, one per line (an age recipients file)
	Passphrase []byte `json:",omitempty"` // an export passphrase (age scrypt), instead of recipients
}

// ExportResult names the archive layout the export wrote: the caller
// reads it (pack, push) and then deletes it.
type ExportResult struct {
	Dir      string // the layout, relative to the state dir: exports/<32 hex digits>
	Manifest string // its manifest's digest
	Files    int    // entries in the backing folder's stream
	Bytes    int64  // size of the stream
	Chunks   int
	Handover bool // the key is sealed to recipients or a passphrase
}

// ImportRequest asks for the archive layout in Dir (imports/<32 hex
// digits>, written by the caller, who deletes it afterwards) to become the
// new volume Name. Identities (an age identity file's contents) or
// Passphrase open a handover.
type ImportRequest struct {
	Name       string
	Dir        string
	Identities string `json:",omitempty"`
	Passphrase []byte `json:",omitempty"`
}

// ImportResult describes the imported archive.
type ImportResult struct {
	Source   string // the volume's name where it was exported
	Manifest string
	Files    int
	Bytes    int64
}

// CloneRequest asks for a new volume Name with the contents of Source.
type CloneRequest struct {
	Source string
	Name   string
}

// CloneResult describes the copy.
type CloneResult struct {
	Files int
	Bytes int64
}

// errorReply is a failed call's answer: the error's text, and the code of
// the sentinel it wraps (see wireErrors).
type errorReply struct {
	Err  string
	Code string `json:",omitempty"`
}

// wireError is a sentinel the admin protocol carries, with its code and
// HTTP status.
type wireError struct {
	code   string
	status int
	err    error
}

// wireErrors are the sentinels a Client's errors match as the daemon's
// did; any other error is a 500 with its text.
func wireErrors() []wireError {
	return []wireError{
		{"forbidden", 403, ErrForbidden},
		{"bad-request", 400, ErrBadRequest},
		{"too-large", 413, ErrTooLarge},
		{"no-such-volume", 404, ErrNoSuchVolume},
		{"key-source", 409, ErrKeySource},
		{"no-handover", 400, ErrNoHandover},
		{"need-identity", 400, ErrNeedIdentity},
		{"wrong-identity", 403, handover.ErrWrongIdentity},
		{"bad-handover", 422, handover.ErrMalformed},
		{"damaged", 422, archive.ErrDamaged},
		{"others-live", 409, cluster.ErrOthersLive},
		// The driver's error classes, for the calls that reach it.
		{"not-found", 404, driver.ErrNotFound},
		{"conflict", 409, driver.ErrConflict},
		{"invalid", 400, driver.ErrInvalid},
		{"unavailable", 503, driver.ErrUnavailable},
	}
}
