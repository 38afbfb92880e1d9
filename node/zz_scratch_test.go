package node

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
)

type scratchObj struct {
	st  durable.State
	rec func(sched time.Time)
}

func (o *scratchObj) Invoke(ctx context.Context, method string, p []byte) ([]byte, error) {
	ms, _ := strconv.ParseInt(string(p), 10, 64)
	return nil, o.st.Storage().SetAlarm(ctx, time.UnixMilli(ms))
}
func (o *scratchObj) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	o.rec(info.ScheduledTime)
	return nil
}

func TestScratchAlarms(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	n, _ := strconv.Atoi(os.Getenv("SCRATCH"))
	var mu sync.Mutex
	var lat []time.Duration
	var fired atomic.Int64
	h := newHarness(t, func(cfg *Config, reg *Registry) {
		cfg.Clock = clockwork.NewRealClock()
		cfg.Partitions = 64
		cfg.CommitMaxOps = 2048
		require.NoError(t, RegisterClass(reg, "S", func(_ context.Context, st durable.State) (*scratchObj, error) {
			return &scratchObj{st: st, rec: func(s time.Time) {
				d := time.Since(s)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				fired.Add(1)
			}}, nil
		}))
	}).start()
	due := time.Now().Add(time.Duration(n/4000+3) * time.Second).Truncate(time.Millisecond)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := h.n.Invoke(context.Background(), "S", Ref{Name: fmt.Sprint("a", i)}, "set", []byte(strconv.FormatInt(due.UnixMilli(), 10)))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	t.Logf("set %d alarms in %s (%.0f/s); due in %s", n, time.Since(t0), float64(n)/time.Since(t0).Seconds(), time.Until(due))
	st0 := h.n.CommitStats()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("heap %d MB, scheduled %d, active objects %d", ms.HeapAlloc>>20, h.n.ScheduledAlarms(), h.n.ActiveObjects())
	time.Sleep(time.Until(due))
	for fired.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	firedAt := time.Now()
	for h.n.CommitStats().Requests-st0.Requests < int64(n) {
		time.Sleep(time.Millisecond)
	}
	done := time.Now()
	st := h.n.CommitStats()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("fired %d: last fire %s after due, last commit %s; %.0f fires/s committed; lateness p50 %s p90 %s p99 %s max %s; txns %d reqs %d ops %d",
		n, firedAt.Sub(due), done.Sub(due), float64(n)/done.Sub(due).Seconds(), lat[n/2], lat[n*9/10], lat[n*99/100], lat[n-1],
		st.Txns-st0.Txns, st.Requests-st0.Requests, st.Ops-st0.Ops)
}
