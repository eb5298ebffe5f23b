package backing

import (
	"errors"

	"golang.org/x/sys/unix"
)

// errLimit stops Usage's walk.
var errLimit = errors.New("walk limit reached")

// DirUsage is what each directory counts for in Usage: one block, what a
// small directory occupies on ext4. It is a fixed charge rather than the
// directory's st_size, which depends on the backing file system and on
// ext4 never shrinks, so that a mount tracking its usage (cryptfs) can
// count a mkdir or rmdir without asking the file system.
const DirUsage = 4096

// EntryUsage is what one backing entry counts for in Usage: a regular file
// or a symlink its size (for a file, its ciphertext with header, tags and
// holes at their full size; for a symlink, its stored target), a directory
// DirUsage, anything else (device nodes, FIFOs, sockets) nothing.
func EntryUsage(st *unix.Statx_t) int64 {
	switch uint32(st.Mode) & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK:
		return int64(st.Size)
	case unix.S_IFDIR:
		return DirUsage
	}
	return 0
}

// Usage sums EntryUsage over d and everything below it, d included, each
// inode once however many hard links it has, visiting at most limit
// entries; complete is false if it stopped there. It never follows a link
// and opens nothing but directories, one name at a time, so neither a
// planted entry nor depth can lead it astray: a directory's last
// subdirectory is walked after the directory is closed, so a deep chain
// holds one descriptor, not one per level.
func Usage(d *Dir, limit int) (size int64, complete bool, err error) {
	w := &usageWalk{size: DirUsage, limit: limit}
	err = w.walk(d, false)
	if errors.Is(err, errLimit) {
		return w.size, false, nil
	}
	return w.size, err == nil, err
}

type usageWalk struct {
	size        int64
	seen, limit int
	linked      map[uint64]bool // inodes with more than one link, counted
}

// walk counts what is below d, closing d if it owns it.
func (w *usageWalk) walk(d *Dir, own bool) error {
	for {
		dirs, err := w.list(d)
		if err != nil || len(dirs) == 0 {
			if own {
				d.Close()
			}
			return err
		}
		for _, name := range dirs[:len(dirs)-1] {
			sub, err := d.OpenDir(name)
			if err != nil {
				continue // gone, or not a directory any more
			}
			if err := w.walk(sub, true); err != nil {
				if own {
					d.Close()
				}
				return err
			}
		}
		last, err := d.OpenDir(dirs[len(dirs)-1])
		if own {
			d.Close()
		}
		if err != nil {
			return nil
		}
		d, own = last, true
	}
}

// list counts d's entries other than directories and returns the names of
// its subdirectories, which it counts too.
func (w *usageWalk) list(d *Dir) ([]string, error) {
	var dirs []string
	err := d.ReadNames(func(name string, _ uint64, typ uint8) bool {
		if name == "." || name == ".." {
			return true
		}
		if w.seen++; w.seen > w.limit {
			return false
		}
		if typ == unix.DT_DIR {
			w.size += DirUsage
			dirs = append(dirs, name)
			return true
		}
		var st unix.Statx_t
		if d.Lstat(name, &st) != nil {
			return true // gone
		}
		if uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR { // DT_UNKNOWN
			w.size += DirUsage
			dirs = append(dirs, name)
			return true
		}
		w.size += w.once(&st)
		return true
	})
	if err == nil && w.seen > w.limit {
		err = errLimit
	}
	return dirs, err
}

// once is EntryUsage of st the first time its inode is seen, 0 after.
func (w *usageWalk) once(st *unix.Statx_t) int64 {
	if st.Nlink > 1 {
		if w.linked[st.Ino] {
			return 0
		}
		if w.linked == nil {
			w.linked = make(map[uint64]bool)
		}
		w.linked[st.Ino] = true
	}
	return EntryUsage(st)
}
