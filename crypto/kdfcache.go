package crypto

import (
	"encoding/hex"
	"fmt"
	"sync"
)

type kdfCache struct {
	mu   sync.Mutex
	keys map[string]*MasterKey
}

func newKDFCache() *kdfCache { return &kdfCache{keys: map[string]*MasterKey{}} }

func (c *kdfCache) get(p *KDFParams, derive func() (*MasterKey, error)) (*MasterKey, error) {
	id := fmt.Sprintf("%s/%d/%d/%d/%s", p.Algorithm, p.Time, p.MemoryKiB, p.Threads, hex.EncodeToString(p.Salt))
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[id]; ok {
		return k, nil
	}
	k, err := derive()
	if err != nil {
		return nil, err
	}
	c.keys[id] = k
	return k, nil
}
