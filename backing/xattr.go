package backing

import "golang.org/x/sys/unix"

// Extended attributes have no *at system calls before Linux 6.13, so they
// act on an O_PATH descriptor of the name (the entry itself, never a
// symlink's target) through its /proc/self/fd link. Only regular files and
// directories carry user.* attributes, as the kernel rules; other types
// answer EPERM like the kernel would, without touching them.

// xattrTarget runs fn with a path that names exactly the entry name.
func (d *Dir) xattrTarget(name string, fn func(path string) error) error {
	if err := checkName(name); err != nil {
		return err
	}
	return d.withPath(name, func(pfd int, st *unix.Statx_t) error {
		switch uint32(st.Mode) & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR:
			_, err := procErr(0, fn(procPath(pfd)))
			return err
		}
		return unix.EPERM
	})
}

// Getxattr reads attribute attr of name into dest (nil dest: its size).
func (d *Dir) Getxattr(name, attr string, dest []byte) (n int, err error) {
	err = d.xattrTarget(name, func(p string) error {
		n, err = unix.Getxattr(p, attr, dest)
		return err
	})
	return n, err
}

// Setxattr sets attribute attr of name.
func (d *Dir) Setxattr(name, attr string, data []byte, flags int) error {
	return d.xattrTarget(name, func(p string) error {
		if err := d.fence.Check(); err != nil {
			return err
		}
		return unix.Setxattr(p, attr, data, flags)
	})
}

// Removexattr removes attribute attr of name.
func (d *Dir) Removexattr(name, attr string) error {
	return d.xattrTarget(name, func(p string) error {
		if err := d.fence.Check(); err != nil {
			return err
		}
		return unix.Removexattr(p, attr)
	})
}

// Listxattr lists the attribute names of name into dest (nil: the size).
// Types that hold no user attributes list none.
func (d *Dir) Listxattr(name string, dest []byte) (n int, err error) {
	err = d.xattrTarget(name, func(p string) error {
		n, err = unix.Listxattr(p, dest)
		return err
	})
	if err == unix.EPERM {
		return 0, nil
	}
	return n, err
}
