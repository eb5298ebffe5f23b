package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountpoint string
	fstype     string
	source     string
}

// parseMountinfo reads the format of proc(5): fields up to " - ", then
// fstype and source. Paths escape space, tab, newline and backslash as
// octal (\040).
func parseMountinfo(data string) ([]mountEntry, error) {
	var out []mountEntry
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		out = append(out, mountEntry{mountpoint: unescapeOctal(f[4]), fstype: g[0], source: unescapeOctal(g[1])})
	}
	return out, nil
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMounts() ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(string(b))
}

// findMount returns the mount whose mountpoint is exactly path, or nil. The
// last one wins: it is the one on top.
func findMount(path string) (*mountEntry, error) {
	ms, err := readMounts()
	if err != nil {
		return nil, err
	}
	var found *mountEntry
	for i := range ms {
		if ms[i].mountpoint == path {
			found = &ms[i]
		}
	}
	return found, nil
}

// findMountContaining returns the mount that path lives on.
func findMountContaining(path string) (*mountEntry, error) {
	ms, err := readMounts()
	if err != nil {
		return nil, err
	}
	var best *mountEntry
	for i := range ms {
		if isUnder(path, ms[i].mountpoint) && (best == nil || len(ms[i].mountpoint) >= len(best.mountpoint)) {
			best = &ms[i]
		}
	}
	return best, nil
}

// isUnder reports whether path is dir or inside it.
func isUnder(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unmountUnder detaches every mount strictly inside dir, deepest first.
func unmountUnder(dir string) error {
	ms, err := readMounts()
	if err != nil {
		return err
	}
	var stale []string
	for _, m := range ms {
		if m.mountpoint != dir && isUnder(m.mountpoint, dir) {
			stale = append(stale, m.mountpoint)
		}
	}
	sort.Slice(stale, func(i, j int) bool { return len(stale[i]) > len(stale[j]) })
	for _, p := range stale {
		fmt.Fprintf(os.Stderr, "fsbench: detaching stale mount %s\n", p)
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("detach stale mount %s: %w", filepath.Clean(p), err)
		}
	}
	return nil
}
