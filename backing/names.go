package backing

import (
	"bytes"

	"github.com/securevol/securevol/crypto"
)

// The bookkeeping files of name encryption (docs/FORMAT.md, "Names"): each
// directory's IV and the sidecars of long names. They are small and of
// fixed or bounded size; anything else there is damage (or an attack).

// ReadDirIV returns the IV of directory d. A missing file is ENOENT; one
// of the wrong size or type is an error that is also EIO.
func ReadDirIV(d *Dir) ([]byte, error) {
	b, err := d.ReadSmall(crypto.DirIVName, crypto.DirIVSize)
	if err != nil {
		return nil, err
	}
	if len(b) != crypto.DirIVSize {
		return nil, ErrDamaged
	}
	return b, nil
}

// CreateDirIV gives the new directory d a fresh IV and returns it.
func CreateDirIV(d *Dir) ([]byte, error) {
	iv, err := crypto.NewDirIV()
	if err != nil {
		return nil, err
	}
	if err := d.WriteNew(crypto.DirIVName, iv, 0o444); err != nil {
		return nil, err
	}
	return iv, nil
}

// maxSidecar bounds a long name's sidecar: the encoded form of a 255-byte
// name is 344 characters; anything much larger is not ours.
const maxSidecar = 4096

// ReadLongName returns the encoded name that the sidecar of the long
// backing name holds, checked against the hash in that name.
func ReadLongName(d *Dir, backingName string) (string, error) {
	b, err := d.ReadSmall(crypto.LongNameSidecar(backingName), maxSidecar)
	if err != nil {
		return "", err
	}
	enc := string(bytes.TrimSpace(b))
	if err := crypto.CheckLongName(backingName, enc); err != nil {
		return "", err
	}
	return enc, nil
}

// WriteLongName stores the sidecar of the long backing name. Its content
// follows from its name, so an intact existing one is kept; anything else
// there is replaced.
func WriteLongName(d *Dir, backingName, enc string) error {
	side := crypto.LongNameSidecar(backingName)
	err := d.WriteNew(side, []byte(enc), 0o400)
	if !isExist(err) {
		return err
	}
	if old, err := ReadLongName(d, backingName); err == nil && old == enc {
		return nil
	}
	if err := d.Unlink(side); err != nil {
		return err
	}
	return d.WriteNew(side, []byte(enc), 0o400)
}

// RemoveLongName deletes the sidecar of the long backing name.
func RemoveLongName(d *Dir, backingName string) error {
	return d.Unlink(crypto.LongNameSidecar(backingName))
}
