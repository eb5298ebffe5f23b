package backing

import (
	"errors"

	"golang.org/x/sys/unix"
)

// errLimit stops Usage's walk.
var errLimit = errors.New("walk limit reached")

// Usage sums the sizes of the regular files below d, visiting at most
// limit entries; complete is false if it stopped there. It never follows a
// link and opens nothing but directories, one name at a time, so neither a
// planted entry nor depth can lead it astray.
func Usage(d *Dir, limit int) (size int64, complete bool, err error) {
	seen := 0
	err = usage(d, &size, &seen, limit)
	if errors.Is(err, errLimit) {
		return size, false, nil
	}
	return size, err == nil, err
}

func usage(d *Dir, size *int64, seen *int, limit int) error {
	var dirs []string
	err := d.ReadNames(func(name string, _ uint64, typ uint8) bool {
		if name == "." || name == ".." {
			return true
		}
		if *seen++; *seen > limit {
			return false
		}
		switch typ {
		case unix.DT_DIR:
			dirs = append(dirs, name)
		case unix.DT_REG, unix.DT_UNKNOWN:
			var st unix.Statx_t
			if d.Lstat(name, &st) == nil && uint32(st.Mode)&unix.S_IFMT == unix.S_IFREG {
				*size += int64(st.Size)
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if *seen > limit {
		return errLimit
	}
	for _, name := range dirs {
		sub, err := d.OpenDir(name)
		if err != nil {
			continue // gone, or not a directory any more
		}
		err = usage(sub, size, seen, limit)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
