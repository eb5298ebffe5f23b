package crypto

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKDFBounds(t *testing.T) {
	ok := floorKDF()
	for _, tc := range []struct {
		name string
		edit func(p *KDFParams)
		want string // "" means accepted
	}{
		{"floor", func(p *KDFParams) {}, ""},
		{"default", func(p *KDFParams) { d, _ := DefaultKDFParams(); *p = *d }, ""},
		{"ceiling", func(p *KDFParams) { p.Time, p.MemoryKiB, p.Threads = MaxKDFTime, MaxKDFMemoryKiB, MaxKDFThreads }, ""},
		{"t=1", func(p *KDFParams) { p.Time = 1 }, "below the floor"},
		{"8 KiB", func(p *KDFParams) { p.MemoryKiB = 8 }, "below the floor"},
		{"63 MiB", func(p *KDFParams) { p.MemoryKiB = 63 << 10 }, "below the floor"},
		{"p=0", func(p *KDFParams) { p.Threads = 0 }, "below the floor"},
		{"t=100", func(p *KDFParams) { p.Time = 100 }, "above the ceiling"},
		{"4 GiB", func(p *KDFParams) { p.MemoryKiB = 4 << 20 }, "above the ceiling"},
		{"p=17", func(p *KDFParams) { p.Threads = 17 }, "above the ceiling"},
		{"short salt", func(p *KDFParams) { p.Salt = p.Salt[:8] }, "salt"},
		{"argon2i", func(p *KDFParams) { p.Algorithm = "argon2i" }, "unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := *ok
			tc.edit(&p)
			err := p.validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("validate = %v, want %q", err, tc.want)
			}
			if tc.want != "" {
				if _, err := NewPassphrase([]byte("pw"), &p); err == nil {
					t.Fatal("NewPassphrase accepted the parameters")
				}
				if _, err := DeriveMasterKey([]byte("pw"), &p); err == nil {
					t.Fatal("DeriveMasterKey accepted the parameters")
				}
			}
		})
	}
}

func saltParams(i int) *KDFParams {
	p := floorKDF()
	p.Salt = ramp(byte(i), 32)
	return p
}

// The cache keeps the kdfCacheSize most recently used derivations.
func TestKDFCacheLRU(t *testing.T) {
	c := newKDFCache()
	var derived atomic.Int32
	get := func(i int) {
		if _, err := c.get(saltParams(i), func() (*MasterKey, error) { derived.Add(1); return RandomMasterKey() }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range kdfCacheSize {
		get(i)
	}
	get(0) // 0 is now the most recent; 1 the least
	get(kdfCacheSize)
	if len(c.entries) != kdfCacheSize {
		t.Fatalf("%d entries, bound %d", len(c.entries), kdfCacheSize)
	}
	n := derived.Load()
	get(0)
	get(kdfCacheSize)
	if derived.Load() != n {
		t.Fatal("recent entries were derived again")
	}
	get(1)
	if derived.Load() != n+1 {
		t.Fatal("the least recently used entry was not evicted")
	}
	for i := range 100 {
		get(1000 + i)
	}
	if len(c.entries) != kdfCacheSize {
		t.Fatalf("%d entries after 100 salts", len(c.entries))
	}
}

// Concurrent requests for the same parameters derive once; a slow
// derivation does not hold up cache hits for other parameters; failures
// are not cached.
func TestKDFCacheConcurrency(t *testing.T) {
	c := newKDFCache()
	if _, err := c.get(saltParams(1), func() (*MasterKey, error) { return RandomMasterKey() }); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var derived atomic.Int32
	slow := func() (*MasterKey, error) { derived.Add(1); <-release; return RandomMasterKey() }
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); c.get(saltParams(2), slow) }()
	}
	hit := make(chan struct{})
	go func() {
		c.get(saltParams(1), func() (*MasterKey, error) { t.Error("cached key derived again"); return nil, nil })
		close(hit)
	}()
	select {
	case <-hit:
	case <-time.After(5 * time.Second):
		t.Fatal("a cache hit waited for another derivation")
	}
	close(release)
	wg.Wait()
	if derived.Load() != 1 {
		t.Fatalf("%d derivations for one set of parameters", derived.Load())
	}
	boom := errors.New("boom")
	for i := range 2 {
		if _, err := c.get(saltParams(3), func() (*MasterKey, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("try %d: %v", i, err)
		}
	}
	if _, err := c.get(saltParams(3), func() (*MasterKey, error) { return RandomMasterKey() }); err != nil {
		t.Fatal(fmt.Errorf("a failure was cached: %w", err))
	}
}
