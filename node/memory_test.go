package node_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// noop is the smallest class: its objects hold nothing of their own.
type noop struct{}

func (noop) Invoke(context.Context, string, []byte) ([]byte, error) { return nil, nil }

// residentProfile: where BenchmarkResidentObjectHeap writes a heap profile
// taken while its objects are resident (-memprofile's is taken after the
// benchmark's node stopped). Use it with -test.memprofilerate=1.
var residentProfile = flag.String("resident-heapprofile", "", "write a heap profile of BenchmarkResidentObjectHeap's resident objects to this file")

// BenchmarkResidentObjectHeap activates b.N objects with one read-only call
// each (on a fake clock, so none is evicted) and reports the node's heap per
// resident, parked object: what the runtime keeps per object beyond the
// class's own state. Run with -benchtime=20000x or more.
func BenchmarkResidentObjectHeap(b *testing.B) {
	h := nodetest.StartOne(b, nodetest.Options{
		Etcd:  testEtcd,
		Clock: nodetest.NewClock(),
		Register: func(reg *node.Registry) error {
			return node.RegisterClass(reg, "Noop", func(context.Context, durable.State) (noop, error) { return noop{}, nil })
		},
		Config: func(cfg *node.Config) { cfg.MaxActiveObjects = 1 << 22 },
	})
	h.MustInvoke("Noop", "warm", "get", nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		h.MustInvoke("Noop", fmt.Sprint("o", i), "get", nil)
	}
	b.StopTimer()
	h.WaitQuiet()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if *residentProfile != "" {
		f, err := os.Create(*residentProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if got := h.Node().ActiveObjects(); got < b.N {
		b.Fatalf("%d objects resident, want %d", got, b.N)
	}
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/object")
}
