package crypto

import (
	"encoding/hex"
	"fmt"
	"sync"
)

// kdfCacheSize bounds the derived keys a Passphrase keeps. A daemon uses
// one salt for all its volumes; a few more cover volumes from a rebuilt
// database. Planted headers with fresh salts only evict each other.
const kdfCacheSize = 4

// kdfCache remembers the last few derivations, most recent first. Lookups
// never wait for a derivation of other parameters; derivations run one at
// a time, so memory stays bounded by one Argon2id run (at most the
// ceiling, see KDFParams.validate) however many headers ask at once.
type kdfCache struct {
	mu       sync.Mutex
	entries  []*kdfEntry
	deriving sync.Mutex
}

type kdfEntry struct {
	id   string
	done chan struct{} // closed once key and err are set
	key  *MasterKey
	err  error
}

func newKDFCache() *kdfCache { return &kdfCache{} }

func (p *KDFParams) cacheID() string {
	return fmt.Sprintf("%s/%d/%d/%d/%s", p.Algorithm, p.Time, p.MemoryKiB, p.Threads, hex.EncodeToString(p.Salt))
}

func (c *kdfCache) get(p *KDFParams, derive func() (*MasterKey, error)) (*MasterKey, error) {
	id := p.cacheID()
	c.mu.Lock()
	e, found := c.touch(id)
	c.mu.Unlock()
	if found {
		<-e.done
		return e.key, e.err
	}
	c.deriving.Lock()
	e.key, e.err = derive()
	c.deriving.Unlock()
	close(e.done)
	if e.err != nil {
		c.mu.Lock()
		c.drop(e) // a failure is not remembered
		c.mu.Unlock()
	}
	return e.key, e.err
}

// touch moves id's entry to the front, or puts a new pending one there
// (evicting the least recently used). c.mu must be held.
func (c *kdfCache) touch(id string) (e *kdfEntry, found bool) {
	for i, x := range c.entries {
		if x.id == id {
			copy(c.entries[1:i+1], c.entries[:i])
			c.entries[0] = x
			return x, true
		}
	}
	e = &kdfEntry{id: id, done: make(chan struct{})}
	if len(c.entries) == kdfCacheSize {
		// An evicted key may still be in a caller's hands: it is dropped,
		// not wiped.
		c.entries = c.entries[:kdfCacheSize-1]
	}
	c.entries = append([]*kdfEntry{e}, c.entries...)
	return e, false
}

func (c *kdfCache) drop(e *kdfEntry) {
	for i, x := range c.entries {
		if x == e {
			c.entries = append(c.entries[:i], c.entries[i+1:]...)
			return
		}
	}
}
