package backing

import (
	"github.com/securevol/securevol/crypto"
)

// Long symlink targets live in files of the volume's root directory, named
// after their contents (crypto.SealSymlink); the backing symlink holds the
// name.

// maxLongTarget bounds a long target's file: the longest target sealed.
const maxLongTarget = crypto.MaxSymlinkLen + crypto.NonceSize + crypto.TagSize

// WriteLongTarget stores a long target's sealed blob under ref in root. Its
// name is its hash, so an existing file of that name is the same blob.
func WriteLongTarget(root *Dir, ref string, blob []byte) error {
	err := root.WriteNew(ref, blob, 0o400)
	if isExist(err) {
		return nil
	}
	return err
}

// ReadLongTarget returns the sealed blob stored under ref in root.
func ReadLongTarget(root *Dir, ref string) ([]byte, error) {
	return root.ReadSmall(ref, maxLongTarget)
}

// ReadSymlink returns what the backing symlink name in d stores and, for a
// long target, the blob it refers to.
func ReadSymlink(root, d *Dir, name string) (stored string, blob []byte, err error) {
	stored, err = d.Readlink(name)
	if err != nil || !crypto.IsLongTarget(stored) {
		return stored, nil, err
	}
	blob, err = ReadLongTarget(root, stored)
	return stored, blob, err
}
