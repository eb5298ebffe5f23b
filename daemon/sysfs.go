package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// remountSysWritable makes /sys writable in the daemon's mount namespace.
// Each volume's mount raises the kernel's readahead for it (128 KiB by
// default) by writing /sys/class/bdi/<dev>/read_ahead_kb, so that
// sequential reads arrive as large requests decrypted in parallel. The
// engine gives a managed plugin a private mount namespace with /sys
// read-only; the plugin holds CAP_SYS_ADMIN, so it may clear the
// read-only flags of its own /sys: of the sysfs instance (the plugin's
// network namespace has its own) and of the mount. The host's /sys is not
// touched.
func remountSysWritable() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys", &st); err != nil {
		return fmt.Errorf("statfs /sys: %w", err)
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
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("remount sysfs read-write: %w", err)
	}
	if err := unix.Mount("", "/sys", "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
		return fmt.Errorf("remount /sys read-write: %w", err)
	}
	return nil
}
