// Package fsck authenticates every name, block, symlink target and extended
// attribute of an encrypted backing directory, without mounting it.
package fsck

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/crypto"
)

// Problem is one damaged or tampered item.
type Problem struct {
	Backing string // path below the backing directory, as stored
	Plain   string // plaintext path as far as it could be decrypted
	What    string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s (stored as %s): %s", p.Plain, p.Backing, p.What)
}

// Report counts what was checked.
type Report struct {
	Dirs, Files, Symlinks, Blocks, Problems int
}

type checker struct {
	root   string
	keys   *crypto.VolumeKeys
	report func(Problem)
	rep    Report
	buf    []byte
	plain  []byte
}

// Check walks the backing directory root and calls report for every
// problem found. The error is for failures to read at all (I/O errors on
// the backing file system), not for tampering.
func Check(root string, keys *crypto.VolumeKeys, report func(Problem)) (Report, error) {
	c := &checker{root: root, keys: keys, report: report,
		buf: make([]byte, crypto.CipherBlockSize), plain: make([]byte, 0, crypto.BlockSize)}
	err := c.dir("", "/")
	return c.rep, err
}

func (c *checker) problem(backing, plain, format string, args ...any) {
	c.rep.Problems++
	c.report(Problem{Backing: "/" + backing, Plain: plain, What: fmt.Sprintf(format, args...)})
}

func (c *checker) dir(rel, plain string) error {
	c.rep.Dirs++
	abs := filepath.Join(c.root, rel)
	c.xattrs(rel, plain)
	var iv []byte
	err := backing.WithRoot(abs, func(d *backing.Dir) (err error) {
		iv, err = backing.ReadDirIV(d)
		return err
	})
	if err != nil {
		c.problem(rel, plain, "directory IV: %v", err)
		return nil // names below cannot be checked
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("read %s: %w", abs, err)
	}
	present := map[string]bool{}
	for _, e := range ents {
		present[e.Name()] = true
	}
	for _, e := range ents {
		name := e.Name()
		brel := filepath.Join(rel, name)
		if crypto.IsInternalName(name) {
			if strings.HasSuffix(name, crypto.LongNameSuffix) && !present[strings.TrimSuffix(name, crypto.LongNameSuffix)] {
				c.problem(brel, plain, "long-name sidecar without its entry")
			}
			continue
		}
		encoded := name
		if crypto.IsLongName(name) {
			b, err := os.ReadFile(filepath.Join(abs, crypto.LongNameSidecar(name)))
			if err != nil {
				c.problem(brel, plain, "long name: %v", err)
				continue
			}
			encoded = string(b)
			if err := crypto.CheckLongName(name, encoded); err != nil {
				c.problem(brel, plain, "%v", err)
				continue
			}
		}
		pname, err := c.keys.DecryptName(encoded, iv)
		if err != nil {
			c.problem(brel, plain, "name: %v", err)
			continue
		}
		ppath := filepath.Join(plain, pname)
		switch t := e.Type(); {
		case t.IsDir():
			if err := c.dir(brel, ppath); err != nil {
				return err
			}
		case t.IsRegular():
			c.file(brel, ppath)
		case t&os.ModeSymlink != 0:
			c.rep.Symlinks++
			c.xattrs(brel, ppath)
			target, err := os.Readlink(filepath.Join(c.root, brel))
			if err != nil {
				return err
			}
			if _, err := c.keys.OpenSymlink(target); err != nil {
				c.problem(brel, ppath, "%v", err)
			}
		}
	}
	return nil
}

func (c *checker) file(rel, plain string) {
	c.rep.Files++
	c.xattrs(rel, plain)
	f, err := os.Open(filepath.Join(c.root, rel))
	if err != nil {
		c.problem(rel, plain, "open: %v", err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return
	}
	hdr := make([]byte, crypto.FileHeaderSize)
	if _, err := io.ReadFull(f, hdr); err != nil {
		c.problem(rel, plain, "file header: truncated")
		return
	}
	id, err := crypto.ParseFileHeader(hdr)
	if err != nil {
		c.problem(rel, plain, "%v", err)
		return
	}
	fc, err := c.keys.FileCipher(id)
	if err != nil {
		c.problem(rel, plain, "%v", err)
		return
	}
	for block := uint64(0); ; block++ {
		n, err := io.ReadFull(f, c.buf)
		if n == 0 {
			break
		}
		c.rep.Blocks++
		if _, oerr := fc.OpenBlock(c.plain[:0], c.buf[:n], block); oerr != nil {
			c.problem(rel, plain, "%v", oerr)
		}
		if err != nil {
			break
		}
	}
}

func (c *checker) xattrs(rel, plain string) {
	path := filepath.Join(c.root, rel)
	sz, err := unix.Llistxattr(path, nil)
	if err != nil || sz == 0 {
		return
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(path, buf)
	if err != nil {
		return
	}
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if !strings.HasPrefix(name, crypto.XattrPrefix) {
			continue
		}
		pname, ok := c.keys.DecryptXattrName(name)
		if !ok {
			c.problem(rel, plain, "xattr %s: name fails authentication", name)
			continue
		}
		val, err := getxattr(path, name)
		if err != nil {
			c.problem(rel, plain, "xattr %s: %v", pname, err)
			continue
		}
		if _, err := c.keys.OpenXattrValue(pname, val, nil); err != nil {
			c.problem(rel, plain, "%v", err)
		}
	}
}

func getxattr(path, name string) ([]byte, error) {
	for sz := 256; sz <= 1<<20; sz *= 4 {
		buf := make([]byte, sz)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.E2BIG
}
