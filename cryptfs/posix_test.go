package cryptfs

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkip names the go-fuse posixtest cases that cannot pass here, and why.
var posixSkip = map[string]string{
	// Expects a second descriptor of the same process to be refused a
	// classic POSIX lock. POSIX locks belong to the process, so that only
	// happens on filesystems that turn them into OFD locks on separate
	// backing descriptors; the kernel handles our locks itself (right for
	// one host). go-fuse's own run of the suite skips it too.
	"FcntlFlockLocksFile": "POSIX locks of one process never conflict; see posixSkip",
}

// TestPosix runs go-fuse's POSIX conformance suite, each case on a fresh
// mount.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			m := newTestMount(t)
			posixtest.All[name](t, m.dir)
		})
	}
}
