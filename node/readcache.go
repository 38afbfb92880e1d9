package node

// readCache is an object's cache of committed values. Most objects read a
// few keys, and a Go map of one entry takes about 425 B of heap (a third
// of what a parked Counter cost in `bench objects`), so the first
// smallCache entries are kept in a slice searched in order; past them, a
// map. A nil *readCache is an empty cache. Guarded by pipeline.mu.
type readCache struct {
	few  []cachedKey
	many map[string]cacheEntry
}

type cachedKey struct {
	key string
	e   cacheEntry
}

// smallCache is how many entries the slice holds before the map takes over.
const smallCache = 8

func (c *readCache) len() int {
	if c == nil {
		return 0
	}
	return len(c.few) + len(c.many)
}

func (c *readCache) get(k string) (cacheEntry, bool) {
	if c == nil {
		return cacheEntry{}, false
	}
	if c.many != nil {
		e, ok := c.many[k]
		return e, ok
	}
	for i := range c.few {
		if c.few[i].key == k {
			return c.few[i].e, true
		}
	}
	return cacheEntry{}, false
}

func (c *readCache) put(k string, e cacheEntry) {
	if c.many != nil {
		c.many[k] = e
		return
	}
	for i := range c.few {
		if c.few[i].key == k {
			c.few[i].e = e
			return
		}
	}
	if len(c.few) < smallCache {
		c.few = append(c.few, cachedKey{key: k, e: e})
		return
	}
	c.many = make(map[string]cacheEntry, 2*smallCache)
	for _, ke := range c.few {
		c.many[ke.key] = ke.e
	}
	c.few = nil
	c.many[k] = e
}
