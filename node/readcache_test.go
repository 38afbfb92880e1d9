package node

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestReadCacheAgreesWithAMap: random puts and gets over a few dozen keys,
// through the switch from the slice to the map, answer as a map does.
func TestReadCacheAgreesWithAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var c *readCache
	if _, ok := c.get("x"); ok || c.len() != 0 {
		t.Fatal("a nil cache is not empty")
	}
	c = &readCache{}
	want := map[string]cacheEntry{}
	for step := range 2000 {
		k := fmt.Sprint("k", rng.IntN(3*smallCache))
		if rng.IntN(2) == 0 {
			e := cacheEntry{val: []byte(fmt.Sprint(step)), ok: rng.IntN(4) > 0}
			c.put(k, e)
			want[k] = e
		}
		got, ok := c.get(k)
		w, wok := want[k]
		if ok != wok || string(got.val) != string(w.val) || got.ok != w.ok {
			t.Fatalf("step %d: get(%s) = %v %v, want %v %v", step, k, got, ok, w, wok)
		}
		if c.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, c.len(), len(want))
		}
	}
	if c.many == nil {
		t.Fatal("the cache never moved to its map")
	}
}
