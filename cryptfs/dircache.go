package cryptfs

import (
	"container/list"
	"sync"

	"github.com/securevol/securevol/backing"
)

// dirCache bounds the backing directory descriptors a mount keeps open.
//
// Every operation reaches the backing folder through the descriptor of a
// directory (node.dir), opened through its parent's one name at a time.
// Keeping them open makes that cheap, but one per directory the kernel
// remembers would let a large or planted tree (a chain of thousands of
// nested directories needs no key to make) use up the descriptors of the
// whole daemon, and with them every other volume's. So at most max stay
// open, least recently used first out; one in use by an operation is
// closed only when that operation releases it, so a descriptor number is
// never reused under a running operation.
type dirCache struct {
	mu  sync.Mutex
	max int
	lru list.List // of *dirRef, most recently used first
}

// dirRef is a directory descriptor and the operations using it.
type dirRef struct {
	d       *backing.Dir
	refs    int
	cached  bool          // in the LRU (else it closes at its last release)
	elem    *list.Element // while cached
	forgets func(*dirRef) // clears the node's pointer to it when evicted
}

// DefaultMaxOpenDirs bounds each mount's cache of directory descriptors
// unless Options.MaxOpenDirs says otherwise: a thousand mounted volumes
// stay within a million descriptors.
const DefaultMaxOpenDirs = 1024

// acquire takes a use of r if it is still cached; false if the node must
// open its directory again.
func (c *dirCache) acquire(r *dirRef) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r == nil || !r.cached {
		return false
	}
	r.refs++
	c.lru.MoveToFront(r.elem)
	return true
}

// add caches the newly opened d, taking one use of it, and evicts the
// least recently used beyond max. forgets is called (under the lock) when
// r leaves the cache, to drop the node's pointer to it.
func (c *dirCache) add(d *backing.Dir, forgets func(*dirRef)) *dirRef {
	r := &dirRef{d: d, refs: 1, cached: true, forgets: forgets}
	c.mu.Lock()
	defer c.mu.Unlock()
	r.elem = c.lru.PushFront(r)
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back().Value.(*dirRef))
	}
	return r
}

// release gives back a use taken by acquire or add.
func (c *dirCache) release(r *dirRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.refs--
	if r.refs == 0 && !r.cached {
		r.d.Close()
	}
}

// drop takes r out of the cache (its node was forgotten); it closes once
// unused.
func (c *dirCache) drop(r *dirRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(r)
}

func (c *dirCache) dropLocked(r *dirRef) {
	if !r.cached {
		return
	}
	r.cached = false
	c.lru.Remove(r.elem)
	r.elem = nil
	r.forgets(r)
	if r.refs == 0 {
		r.d.Close()
	}
}

// closeAll runs once the mount is gone: nothing uses a directory any more.
func (c *dirCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; e = e.Next() {
		r := e.Value.(*dirRef)
		r.cached = false
		r.d.Close()
	}
	c.lru.Init()
}
