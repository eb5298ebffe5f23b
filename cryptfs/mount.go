// Package cryptfs is the FUSE filesystem that shows the plaintext of an
// encrypted backing directory at a mountpoint and stores only ciphertext.
package cryptfs

import (
	"errors"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/crypto"
)

// Options tune a mount.
type Options struct {
	// Log receives tamper reports and errors; nil discards them.
	Log *logrus.Entry
	// AllowOther lets users other than the mounter in (with
	// default_permissions, so the kernel checks modes as on ext4).
	AllowOther bool
	// FsName is shown as the source in /proc/mounts.
	FsName string
	// Debug logs every FUSE request.
	Debug bool
}

// Mount serves the encrypted directory backingDir (already initialised with
// crypto.InitDir) at mountpoint. The caller unmounts with server.Unmount().
func Mount(backingDir, mountpoint string, keys *crypto.VolumeKeys, opts Options) (*fuse.Server, error) {
	return nil, errors.New("cryptfs: not built yet")
}
