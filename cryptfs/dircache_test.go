package cryptfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// With room for two directory descriptors, busy trees in several
// directories at once keep evicting each other's: every operation still
// finds its directory, renamed or not, and nothing is read or written in
// the wrong place.
func TestSmallDirCache(t *testing.T) {
	m := newTestMountOpts(t, Options{MaxOpenDirs: 2})
	const workers, depth = 4, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := m.path(fmt.Sprintf("w%d", w))
			for d := range depth {
				p = filepath.Join(p, fmt.Sprintf("d%d", d))
				if err := os.MkdirAll(p, 0o755); err != nil {
					errs <- err
					return
				}
				if err := os.WriteFile(filepath.Join(p, "f"), []byte(p), 0o644); err != nil {
					errs <- err
					return
				}
			}
			top := m.path(fmt.Sprintf("w%d", w))
			if err := os.Rename(top, top+"-moved"); err != nil {
				errs <- err
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m.remount()
	for w := range workers {
		orig := m.path(fmt.Sprintf("w%d", w))
		p, q := orig, m.path(fmt.Sprintf("w%d-moved", w))
		for d := range depth {
			p = filepath.Join(p, fmt.Sprintf("d%d", d))
			q = filepath.Join(q, fmt.Sprintf("d%d", d))
			if got, err := os.ReadFile(filepath.Join(q, "f")); err != nil || !bytes.Equal(got, []byte(p)) {
				t.Fatalf("%s: %q, %v; want %q", q, got, err, p)
			}
		}
	}
}
