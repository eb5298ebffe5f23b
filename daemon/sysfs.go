package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// bdiDir holds the kernel's per-device settings (backing device info),
// those of FUSE mounts among them.
const bdiDir = "/sys/devices/virtual/bdi"

// makeBDIWritable makes bdiDir, and nothing else of /sys, writable in the
// daemon's mount namespace. Each volume's mount raises the kernel's
// readahead for it (128 KiB by default) by writing
// /sys/class/bdi/<dev>/read_ahead_kb, a link into bdiDir, so that
// sequential reads arrive as large requests decrypted in parallel. The
// engine gives a managed plugin a private mount namespace with /sys
// read-only; the plugin holds CAP_SYS_ADMIN, so it may lift that for the
// one folder it needs: a mount of its own for bdiDir, the sysfs instance
// read-write (a plugin on the host's network shares the host's, which is
// read-write already), /sys read-only again as a mount, and bdiDir's
// mount read-write. The host's mounts are not touched.
func makeBDIWritable() error {
	var st unix.Statfs_t
	if err := unix.Statfs(bdiDir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", bdiDir, err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	// A remount keeps what it is not told to change only if told again:
	// carry over the mount's other flags.
	var flags uintptr
	for _, f := range []struct{ st, ms int64 }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_RELATIME, unix.MS_RELATIME}, {unix.ST_NOATIME, unix.MS_NOATIME},
	} {
		if st.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	steps := []struct {
		what                string
		source, target, typ string
		flags               uintptr
	}{
		{"bind " + bdiDir, bdiDir, bdiDir, "", unix.MS_BIND},
		{"remount sysfs read-write", "sysfs", "/sys", "sysfs", unix.MS_REMOUNT | flags},
		{"remount /sys read-only", "", "/sys", "", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | flags},
		{"remount " + bdiDir + " read-write", "", bdiDir, "", unix.MS_REMOUNT | unix.MS_BIND | flags},
	}
	for _, s := range steps {
		if err := unix.Mount(s.source, s.target, s.typ, s.flags, ""); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}
