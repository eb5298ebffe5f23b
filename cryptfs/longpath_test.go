package cryptfs

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Long paths, long names and long symlink targets, compared with ext4
// (issue 7): any path up to PATH_MAX with names up to 255 bytes, at any
// depth, must work as it does there.

const pathMax = unix.PathMax // 4096 with the terminating NUL

// TestLongPathsMatchExt4 builds, one directory at a time through open
// directory descriptors, a path of PATH_MAX-1 bytes (relative to the work
// directory), then works on it with calls that each take the whole path.
func TestLongPathsMatchExt4(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nameLen int
	}{
		{"depth-16-names-255", 255}, // shallow, the longest names (hashed on disk)
		{"depth-26-names-160", 160}, // shallow, the longest names stored unhashed
		{"depth-512-names-7", 7},    // deep, short names
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirs, file := pathOfNames(pathMax-1, tc.nameLen)
			if got := fmt.Sprintf("depth-%d-names-%d", len(dirs)+1, tc.nameLen); got != tc.name {
				t.Fatalf("case is %s", got)
			}
			compareWithExt4(t, func(r *transcript) { longPathSequence(r, dirs, file) })
		})
	}
}

// pathOfNames splits a path of total bytes into directory names of
// nameLen bytes and a last name of at most nameLen; names differ by level.
func pathOfNames(total, nameLen int) (dirs []string, file string) {
	used := 0
	for total-used > nameLen {
		prefix := fmt.Sprintf("%d-", len(dirs))
		dirs = append(dirs, prefix+strings.Repeat("d", nameLen-len(prefix)))
		used += nameLen + 1
	}
	n := total - used
	return dirs, strings.Repeat("f", n)
}

func longPathSequence(r *transcript, dirs []string, file string) {
	dirPath := strings.Join(dirs, "/")
	full := dirPath + "/" + file
	renamed := dirPath + "/" + "g" + file[1:]
	r.rec("path length", nil, len(full))

	// Down the chain: mkdirat and openat, one name per call.
	fd, err := unix.Dup(r.root)
	if err != nil {
		r.t.Fatal(err)
	}
	depth := 0
	for _, name := range dirs {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			r.rec(fmt.Sprintf("mkdirat at depth %d", depth+1), err)
			break
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.rec(fmt.Sprintf("openat at depth %d", depth+1), err)
			break
		}
		unix.Close(fd)
		fd, depth = next, depth+1
	}
	r.rec("directories made", nil, depth)
	content := []byte(fmt.Sprintf("a file at depth %d", depth+1))
	f, err := unix.Openat(fd, file, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err == nil {
		_, err = unix.Write(f, content)
		unix.Close(f)
	}
	r.rec("create the file by its own name", err)
	unix.Close(fd)
	if depth < len(dirs) {
		return // ext4's transcript goes on; the difference shows above
	}

	// The whole path in one call each.
	var st unix.Stat_t
	err = unix.Fstatat(r.root, full, &st, unix.AT_SYMLINK_NOFOLLOW)
	r.rec("fstatat full path", err, "size", st.Size, "type", fmt.Sprintf("%o", st.Mode&unix.S_IFMT))
	got := make([]byte, 100)
	n := 0
	if f, err = unix.Openat(r.root, full, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		n, err = unix.Read(f, got)
		unix.Close(f)
	}
	r.rec("open and read full path", err, "content matches", string(got[:max(n, 0)]) == string(content))
	_, err = unix.Openat(r.root, full+"x", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	r.rec("open a path of PATH_MAX bytes", err)
	err = unix.UtimesNanoAt(r.root, full, []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}, unix.AT_SYMLINK_NOFOLLOW)
	r.rec("utimensat full path", err)
	r.rec("fchmodat full path", unix.Fchmodat(r.root, full, 0o600, 0))
	r.rec("fchownat full path", unix.Fchownat(r.root, full, 1000, 1000, unix.AT_SYMLINK_NOFOLLOW))
	err = unix.Fstatat(r.root, full, &st, unix.AT_SYMLINK_NOFOLLOW)
	r.rec("fstatat after", err, "mode", fmt.Sprintf("%o", st.Mode), "uid", st.Uid, "mtime", st.Mtim.Sec)
	r.rec("truncate via open O_TRUNC", truncateAt(r.root, full))
	r.rec("renameat full paths", unix.Renameat(r.root, full, r.root, renamed))
	r.rec("symlinkat full path", unix.Symlinkat("target", r.root, full))
	buf := make([]byte, 64)
	n, err = unix.Readlinkat(r.root, full, buf)
	r.rec("readlinkat full path", err, string(buf[:max(n, 0)]))
	if d, err := unix.Openat(r.root, dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		r.rec("open the deepest directory by path", err)
	} else {
		names, err := readNames(d)
		unix.Close(d)
		r.rec("list the deepest directory", err, shortNames(names))
	}
	r.rec("unlinkat full path (symlink)", unix.Unlinkat(r.root, full, 0))
	r.rec("linkat full paths", unix.Linkat(r.root, renamed, r.root, full, 0))
	err = unix.Fstatat(r.root, full, &st, unix.AT_SYMLINK_NOFOLLOW)
	r.rec("fstatat the link", err, "nlink", st.Nlink)
	r.rec("unlinkat full path (link)", unix.Unlinkat(r.root, full, 0))
	r.rec("unlinkat full path (file)", unix.Unlinkat(r.root, renamed, 0))

	// Up the chain: each directory by its whole path, deepest first.
	var rmErr error
	removed := 0
	for i := len(dirs); i > 0 && rmErr == nil; i-- {
		if rmErr = unix.Unlinkat(r.root, strings.Join(dirs[:i], "/"), unix.AT_REMOVEDIR); rmErr == nil {
			removed++
		}
	}
	r.rec("rmdir every directory by path", rmErr, removed)
}

func truncateAt(dirfd int, path string) error {
	f, err := unix.Openat(dirfd, path, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(f)
}

// shortNames writes long names as their first byte and length.
func shortNames(names []string) string {
	var out []string
	for _, n := range names {
		out = append(out, fmt.Sprintf("%c×%d", n[0], len(n)))
	}
	return strings.Join(out, " ")
}

// TestNameLengthsMatchExt4: names of exactly 255 bytes (ASCII, and
// multi-byte UTF-8) work for every kind of entry and every call that takes
// a name; 256 bytes is ENAMETOOLONG everywhere, as on ext4.
func TestNameLengthsMatchExt4(t *testing.T) {
	compareWithExt4(t, func(r *transcript) {
		for _, tc := range []struct {
			what string
			name func(first byte) string
		}{
			{"255 ASCII", func(c byte) string { return string(c) + strings.Repeat("n", 254) }},
			{"255 UTF-8", func(c byte) string { return string(c) + strings.Repeat("é", 127) }},
			{"256 ASCII", func(c byte) string { return string(c) + strings.Repeat("n", 255) }},
		} {
			nameSequence(r, tc.what, tc.name)
		}
	})
}

func nameSequence(r *transcript, what string, name func(first byte) string) {
	f, d, s, h, g := name('f'), name('d'), name('s'), name('h'), name('g')
	fd, err := unix.Openat(r.root, f, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	r.rec(what+": create", err)
	var st unix.Stat_t
	r.rec(what+": stat", unix.Fstatat(r.root, f, &st, unix.AT_SYMLINK_NOFOLLOW))
	r.rec(what+": mkdir", unix.Mkdirat(r.root, d, 0o755))
	r.rec(what+": mknod fifo", unix.Mknodat(r.root, name('p'), unix.S_IFIFO|0o644, 0))
	r.rec(what+": symlink", unix.Symlinkat("target", r.root, s))
	r.rec(what+": link", unix.Linkat(r.root, f, r.root, h, 0))
	r.rec(what+": rename", unix.Renameat(r.root, f, r.root, g))
	r.rec(what+": rename to a short name and back", errors2(unix.Renameat(r.root, g, r.root, "short"), unix.Renameat(r.root, "short", r.root, g)))
	names, err := readNamesAt(r.root)
	r.rec(what+": list", err, shortNames(names))
	r.reopen()
	names, err = readNamesAt(r.root)
	r.rec(what+": list after a remount", err, shortNames(names))
	r.rec(what+": stat after a remount", unix.Fstatat(r.root, g, &st, unix.AT_SYMLINK_NOFOLLOW))
	for _, n := range []string{g, h, s, name('p')} {
		r.rec(what+": unlink "+n[:1], unix.Unlinkat(r.root, n, 0))
	}
	r.rec(what+": rmdir", unix.Unlinkat(r.root, d, unix.AT_REMOVEDIR))
}

// errors2 is the first error of two calls.
func errors2(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// readNamesAt lists directory fd from its start.
func readNamesAt(fd int) ([]string, error) {
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(d)
	return readNames(d)
}

// TestSymlinkTargetsMatchExt4: a symlink target of up to PATH_MAX-1 bytes
// is stored and read back exactly (also after a remount); PATH_MAX bytes
// is ENAMETOOLONG, as on ext4.
func TestSymlinkTargetsMatchExt4(t *testing.T) {
	compareWithExt4(t, func(r *transcript) {
		lengths := []int{1, 3040, 3041, pathMax - 2, pathMax - 1, pathMax}
		targets := map[int]string{}
		for _, n := range lengths {
			targets[n] = strings.Repeat("0123456789/", n/11+1)[:n]
			r.rec(fmt.Sprintf("symlink target %d", n), unix.Symlinkat(targets[n], r.root, fmt.Sprintf("l%d", n)))
		}
		check := func(when string) {
			for _, n := range lengths {
				buf := make([]byte, 2*pathMax)
				k, err := unix.Readlinkat(r.root, fmt.Sprintf("l%d", n), buf)
				var st unix.Stat_t
				serr := unix.Fstatat(r.root, fmt.Sprintf("l%d", n), &st, unix.AT_SYMLINK_NOFOLLOW)
				r.rec(fmt.Sprintf("readlink %d %s", n, when), err, "length", k, "exact", string(buf[:max(k, 0)]) == targets[n],
					"lstat", errnoText(serr), "size", st.Size)
			}
		}
		check("at once")
		r.reopen()
		check("after a remount")
	})
}
