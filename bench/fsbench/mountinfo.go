package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/securevol/securevol/internal/mountinfo"
)

// findMountContaining returns the mount that path lives on.
func findMountContaining(path string) (*mountinfo.Mount, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var best *mountinfo.Mount
	for i := range ms {
		if mountinfo.IsUnder(path, ms[i].Mountpoint) && (best == nil || len(ms[i].Mountpoint) >= len(best.Mountpoint)) {
			best = &ms[i]
		}
	}
	return best, nil
}

// unmountUnder detaches every mount strictly inside dir, deepest first.
func unmountUnder(dir string) error {
	ms, err := mountinfo.Read()
	if err != nil {
		return err
	}
	var stale []string
	for _, m := range ms {
		if m.Mountpoint != dir && mountinfo.IsUnder(m.Mountpoint, dir) {
			stale = append(stale, m.Mountpoint)
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
