// Package mountinfo reads /proc/self/mountinfo (proc(5)): which file
// systems are mounted where.
package mountinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Mountpoint string
	FSType     string // e.g. "ext4", "fuse.securevol"
	Source     string
	// Major and Minor are st_dev of the mount's files; a FUSE
	// connection's control folder under /sys/fs/fuse/connections is named
	// by it.
	Major, Minor uint32
}

// Parse reads the format of proc(5): fields up to " - ", then the file
// system type and source. Paths escape space, tab, newline and backslash
// in octal (\040).
func Parse(data string) ([]Mount, error) {
	var out []Mount
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		maj, min, ok := parseDev(f[2])
		if !ok {
			return nil, fmt.Errorf("mountinfo: malformed device in line %q", line)
		}
		out = append(out, Mount{Mountpoint: unescape(f[4]), FSType: g[0], Source: unescape(g[1]), Major: maj, Minor: min})
	}
	return out, nil
}

// parseDev reads "major:minor".
func parseDev(s string) (major, minor uint32, ok bool) {
	a, b, ok := strings.Cut(s, ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(ma), uint32(mi), ok && err1 == nil && err2 == nil
}

// Read returns this process's mounts, in mount order (a later mount at the
// same place is on top).
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b))
}

// At returns the mount on top at exactly path, or nil.
func At(path string) (*Mount, error) {
	ms, err := Read()
	if err != nil {
		return nil, err
	}
	var found *Mount
	for i := range ms {
		if ms[i].Mountpoint == path {
			found = &ms[i]
		}
	}
	return found, nil
}

// IsUnder reports whether path is dir or inside it.
func IsUnder(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
