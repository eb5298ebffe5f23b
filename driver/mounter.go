package driver

import (
	"github.com/securevol/securevol/internal/mountinfo"

	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
)

// Mounter shows the plaintext of an encrypted backing folder at mountpoint
// (which exists and is empty) until the returned Mount is unmounted.
type Mounter func(backing, mountpoint, name string, keys *crypto.VolumeKeys, opts MountOptions, log *logrus.Entry) (Mount, error)

// MountOptions are what a Mounter applies to one mount.
type MountOptions struct {
	// Size limits what the backing folder may hold, in bytes (0: no
	// limit).
	Size int64
	// Fence, in cluster mode, stops the mount's writes once the node's
	// claim on the volume is lost (nil: never).
	Fence *backing.Fence
	// ReadOnly mounts the folder read-only (a view's mount).
	ReadOnly bool
}

// Mount is a live mount; *fuse.Server is one.
type Mount interface {
	Unmount() error
	Wait()
}

// usageCounter is a Mount that counts what its backing folder holds (one
// with a size limit), so Status need not walk it.
type usageCounter interface {
	Used() int64
}

// freezable is a Mount whose changes to its backing folder can be held
// while the folder is copied (see cryptfs.Freezer).
type freezable interface {
	Freeze(ctx context.Context) (thaw func(), err error)
}

// fuseMount is a cryptfs mount, with the Freezer that can hold its
// changes.
type fuseMount struct {
	*fuse.Server
	*cryptfs.Freezer
}

// limitedMount is a FUSE mount with a size limit.
type limitedMount struct {
	fuseMount
	quota *cryptfs.Quota
}

func (m limitedMount) Used() int64 { return m.quota.Used() }

// Metrics watches the volumes for monitoring (*metrics.Metrics is one).
type Metrics interface {
	// Volume returns the observer of the volume name's mounts.
	Volume(name string) cryptfs.Observer
	// Remove forgets a removed volume.
	Remove(name string)
}

// FUSEMounter returns the Mounter that mounts with cryptfs, reporting each
// mount to metrics (if not nil). allow_other with default_permissions lets
// non-root container users in, with the kernel checking modes as on any
// local filesystem.
func FUSEMounter(metrics Metrics) Mounter {
	return func(dir, mountpoint, name string, keys *crypto.VolumeKeys, mo MountOptions, log *logrus.Entry) (Mount, error) {
		opts := cryptfs.Options{
			Log:        log,
			AllowOther: true,
			FsName:     "securevol:" + name,
			// One daemon serves every volume, and each mount's buffers
			// scale with MaxWrite: 256 KiB keeps 100 mounted volumes near
			// 100 MiB RSS; sequential throughput measured the same as
			// with 1 MiB.
			MaxWrite: 256 << 10,
			// Every mount can be snapshotted (Driver.Snapshot); a
			// changing request pays two atomic adds for it.
			Freezer:  cryptfs.NewFreezer(),
			Fence:    mo.Fence,
			ReadOnly: mo.ReadOnly,
		}
		if mo.Size > 0 {
			opts.Quota = cryptfs.NewQuota(mo.Size)
		}
		if metrics != nil {
			opts.Observer = metrics.Volume(name)
		}
		srv, err := cryptfs.Mount(dir, mountpoint, keys, opts)
		if err != nil {
			return nil, err
		}
		m := fuseMount{srv, opts.Freezer}
		if opts.Quota != nil {
			return limitedMount{m, opts.Quota}, nil
		}
		return m, nil
	}
}

// isOurs reports whether a mountinfo entry is a securevol FUSE mount
// (cryptfs mounts with type fuse.securevol and source securevol:<name>).
func isOurs(fstype, source string) bool {
	return fstype == "fuse.securevol" || strings.HasPrefix(source, "securevol:")
}

// ourMountsUnder lists securevol's mount points at or below root from
// /proc/self/mountinfo, deepest first (the order to unmount them in).
func ourMountsUnder(root string) ([]string, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	root = filepath.Clean(root)
	var out []string
	// Newest first, so among stacked mounts at one path the upper one
	// comes first; then deeper paths first.
	for _, m := range slices.Backward(ms) {
		if mountinfo.IsUnder(m.Mountpoint, root) && isOurs(m.FSType, m.Source) {
			out = append(out, m.Mountpoint)
		}
	}
	sortDeepestFirst(out)
	return out, nil
}

func sortDeepestFirst(p []string) {
	// Stable insertion sort on depth: a handful of entries.
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && strings.Count(p[j], "/") > strings.Count(p[j-1], "/"); j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// detach lazily unmounts path: it leaves the namespace at once and the
// kernel lets go of it when the last user does. It is the only unmount that
// works on a FUSE mount whose server died ("transport endpoint is not
// connected") or that a process still holds open.
func detach(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// errStillServing: the unmount was issued but the server has not ended.
var errStillServing = errors.New("FUSE server still serving after unmount")

// unmountWithin unmounts m, waiting at most wait. go-fuse's Unmount
// returns only when its server has ended, which is when the kernel drops
// the last reference to the mount, and a bind mount of it in another mount
// namespace (a container, a propagated mount) is such a reference.
func unmountWithin(m Mount, wait time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- m.Unmount() }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errStillServing
	}
}
