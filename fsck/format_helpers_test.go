package fsck

import (
	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// initDir makes dir an encrypted directory (as `securevol init` does).
func initDir(dir string, ks crypto.KeySource) (keys *crypto.VolumeKeys, h *crypto.Header, err error) {
	err = backing.WithRoot(dir, func(root *backing.Dir) error {
		h, keys, err = backing.InitVolume(root, ks, "", nil)
		return err
	})
	return keys, h, err
}

// readDirIV reads the IV of the backing directory dir.
func readDirIV(dir string) (iv []byte, err error) {
	err = backing.WithRoot(dir, func(d *backing.Dir) error {
		iv, err = backing.ReadDirIV(d)
		return err
	})
	return iv, err
}
