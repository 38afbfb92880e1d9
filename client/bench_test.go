package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/nodetest"
)

// Invocation throughput on a 3-node cluster, one etcd, all on loopback:
// Counter.get (read-only: no etcd write) and Counter.increment (one fenced
// Txn per call), sent straight to the owner or through a node that forwards
// them. Run with
//
//	go test -run '^$' -bench Invoke -benchtime 3s ./client/
//
// Each parallel goroutine works on its own object, so objects do not queue
// behind each other; b.SetParallelism sets the concurrency per CPU.
func BenchmarkInvoke(b *testing.B) {
	c := startCluster(b, &runs{})
	for _, method := range []string{"get", "increment"} {
		for _, route := range []string{"owner", "forwarded"} {
			b.Run(method+"/"+route, func(b *testing.B) { benchInvoke(b, c, method, route == "forwarded") })
		}
	}
}

func benchInvoke(b *testing.B, c *nodetest.Cluster, method string, forwarded bool) {
	const seed = 0
	want := is(seed)
	if forwarded {
		want = isNot(seed)
	}
	// NoDirect pins every call to the seed: the owner itself, or a node
	// that must forward.
	cl := dial(b, c.Addr(seed), client.Options{NoDirect: true})
	// One object per goroutine (parallelism × GOMAXPROCS of them), chosen
	// by owner before the clock starts.
	const parallelism = 8
	var names []string
	for k := 0; len(names) < parallelism*runtime.GOMAXPROCS(0); k++ {
		name := fmt.Sprintf("bench-%s-%d", method, k)
		if _, owner := ownerOf(b, c, "Counter", name); want(owner) {
			names = append(names, name)
		}
	}
	var next atomic.Int64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		name := names[next.Add(1)-1]
		ctx := context.Background()
		for pb.Next() {
			if _, err := cl.Invoke(ctx, "Counter", client.ByName(name), method, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
