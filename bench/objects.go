package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/node"
)

// ObjectsScenario measures what a parked object costs the node it lives
// on: Objects objects of Counter are activated by a read-only call (get:
// one group read, no write, so etcd's store does not grow with them) and
// stay in memory, parked; the live heap and the process's resident set are
// read before and after, each after a full collection. The heap is the
// whole process's (the in-process etcd's read caches, the client's
// connections and the nodes' tables included), so the bytes per object
// are an upper bound of the node's own.
type ObjectsScenario struct {
	// Objects is how many objects are activated (default 1,000,000; 100,000
	// with --short).
	Objects int
}

const (
	defaultObjects      = 1_000_000
	defaultShortObjects = 100_000
	// targetBytesPerParked is issue #17's goal.
	targetBytesPerParked = 300
	// objectsIdleTimeout keeps every object in memory while the rest are
	// activated (a million take about a minute at 20,000/s).
	objectsIdleTimeout = 30 * time.Minute
)

// Name implements Scenario.
func (ObjectsScenario) Name() string { return "objects" }

// Description implements Describer.
func (ObjectsScenario) Description() string {
	return "memory per parked object: a million objects (--objects) activated by a read-only call and left in memory; live heap and RSS"
}

// Optional implements Optional: a million objects take minutes and GBs.
func (ObjectsScenario) Optional() {}

// Prepare implements Preparer: idle objects stay in memory for the run,
// and a node may hold them all (the default MaxActiveObjects, 200,000 a
// node, would refuse the rest as overload for as long as they stay).
func (s ObjectsScenario) Prepare(_ *node.Registry, cfg *node.Config) error {
	cfg.IdleTimeout = max(cfg.IdleTimeout, objectsIdleTimeout)
	cfg.MaxActiveObjects = max(cfg.MaxActiveObjects, s.Objects, defaultObjects)
	return nil
}

// WithDefaults fills the zero fields by the profile.
func (s ObjectsScenario) WithDefaults(p Profile) ObjectsScenario {
	if s.Objects == 0 {
		s.Objects = defaultObjects
		if p.Short {
			s.Objects = defaultShortObjects
		}
	}
	return s
}

// Run implements Scenario.
func (s ObjectsScenario) Run(ctx context.Context, env *Env) ([]Result, error) {
	s = s.WithDefaults(env.Profile)
	if s.Objects <= 0 {
		return nil, fmt.Errorf("objects: %d objects: must be positive", s.Objects)
	}
	c := env.Cluster
	if c == nil {
		return nil, errors.New("objects: it needs the embedded cluster: it reads the memory of the process the nodes run in (leave out --addr)")
	}
	resident := func() int {
		n := 0
		for i := range c.Size() {
			if a := c.Agent(i); a != nil {
				n += a.Node.ActiveObjects()
			}
		}
		return n
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before, rssBefore, residentBefore := heap(), readRSS(), resident()
	started := time.Now()
	err := each(ctx, env, "objects: activate", s.Objects, 256, func(ctx context.Context, i int) error {
		_, err := env.Client.Invoke(ctx, "Counter", client.ByName(fmt.Sprintf("bench-%s-parked-%d", env.RunID, i)), "get", nil)
		return err
	})
	took := time.Since(started)
	if err != nil {
		return nil, fmt.Errorf("objects: %w", err)
	}
	in := resident() - residentBefore
	if in < s.Objects {
		return nil, fmt.Errorf("objects: %d of the %d objects activated are in memory: the nodes evicted some (idle timeout %s)", in, s.Objects, objectsIdleTimeout)
	}
	after, rss := heap(), readRSS()
	grown := float64(after) - float64(before)
	perObject := grown / float64(s.Objects)
	env.Progress.Linef("%-36s %.0f bytes of heap per parked object; RSS %.0f MB with %d parked", "objects memory", perObject, mb(rss), s.Objects)
	return []Result{{
		Scenario: "objects", Case: "memory per parked object", Unit: "bytes/object",
		Count: int64(s.Objects), Seconds: took.Seconds(), Rate: perObject,
		Target: &Target{Metric: "rate", Op: "<=", Value: targetBytesPerParked, Met: perObject <= targetBytesPerParked},
		Note:   "growth of the process's live heap (after a full GC) per object activated by a read-only call and left parked; an upper bound of the node's own",
		Extra: map[string]float64{
			"heap_growth_MB": grown / (1 << 20), "rss_MB": mb(rss), "rss_growth_MB": mb(rss) - mb(rssBefore),
			"activations/s": float64(s.Objects) / took.Seconds(),
		},
	}}, nil
}
