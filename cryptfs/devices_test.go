package cryptfs

import (
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestDeviceNodesMatchExt4: block and character device nodes are stored
// as on an ext4 volume (issue 7): mknod succeeds, stat shows the same type,
// mode and device numbers, also after a remount, and listing shows their
// type. Opening one fails as on a nodev ext4 mount: the FUSE mount is
// nodev, so a stored node gives no access to the device. FIFOs and
// sockets are compared too.
func TestDeviceNodesMatchExt4(t *testing.T) {
	// The block device is a loop device over a scratch file, in case
	// anything did open it.
	blk, blkCheck := scratchLoop(t)
	nodes := []struct {
		name string
		mode uint32
		dev  uint64
	}{
		{"chr", unix.S_IFCHR | 0o640, unix.Mkdev(1, 3)},
		{"blk", unix.S_IFBLK | 0o660, blk},
		{"fifo", unix.S_IFIFO | 0o644, 0},
		{"sock", unix.S_IFSOCK | 0o644, 0},
	}
	compareWithExt4(t, func(r *transcript) {
		for _, n := range nodes {
			r.rec("mknod "+n.name, unix.Mknodat(r.root, n.name, n.mode, int(n.dev)))
		}
		stat := func(when string) {
			for _, n := range nodes {
				var st unix.Stat_t
				err := unix.Fstatat(r.root, n.name, &st, unix.AT_SYMLINK_NOFOLLOW)
				r.rec(fmt.Sprintf("stat %s %s", n.name, when), err, fmt.Sprintf("mode %o", st.Mode),
					"rdev", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), "size", st.Size, "nlink", st.Nlink)
			}
			types, err := direntTypes(r.root)
			r.rec("list "+when, err, types)
		}
		stat("at once")
		r.reopen()
		stat("after a remount")
		for _, n := range nodes[:2] {
			for _, flags := range []int{unix.O_RDONLY, unix.O_WRONLY} {
				fd, err := unix.Openat(r.root, n.name, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				r.rec(fmt.Sprintf("open %s flags %d", n.name, flags), err)
			}
		}
		for _, n := range nodes[:2] {
			r.rec("chmod "+n.name, unix.Fchmodat(r.root, n.name, 0o600, 0))
			r.rec("chown "+n.name, unix.Fchownat(r.root, n.name, 1000, 1000, unix.AT_SYMLINK_NOFOLLOW))
			r.rec("rename "+n.name, unix.Renameat(r.root, n.name, r.root, n.name+"2"))
			r.rec("link "+n.name, unix.Linkat(r.root, n.name+"2", r.root, n.name, 0))
			var st unix.Stat_t
			err := unix.Fstatat(r.root, n.name, &st, unix.AT_SYMLINK_NOFOLLOW)
			r.rec("stat "+n.name+" after", err, fmt.Sprintf("mode %o", st.Mode), "uid", st.Uid, "nlink", st.Nlink,
				"rdev", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
		}
		for _, name := range []string{"chr", "chr2", "blk", "blk2", "fifo", "sock"} {
			r.rec("unlink "+name, unix.Unlinkat(r.root, name, 0))
		}
	})
	if changed := blkCheck(); changed != "" {
		t.Errorf("the block device was written: %s", changed)
	}
}

// direntTypes lists directory fd from its start as name:type pairs, with
// the type the directory entry gives (as ls does without stat).
func direntTypes(fd int) (string, error) {
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(d)
	types := map[string]uint8{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(d, buf)
		if err != nil {
			return "", err
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			de := (*unix.Dirent)(unsafe.Pointer(&b[0]))
			name := cString(b[unsafe.Offsetof(de.Name):de.Reclen])
			types[name] = de.Type
			b = b[de.Reclen:]
		}
	}
	return fmt.Sprint(types), nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
