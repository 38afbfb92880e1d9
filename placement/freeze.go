package placement

import (
	"context"
	"sync/atomic"
)

// Freezer simulates a process pause (SIGSTOP) for tests: while frozen, Gate
// blocks. A member gates its keep-alives, its reconciliation and its node's
// new events on it, and its leader campaigns and writes through it, so a
// frozen node loses its lease, its partitions and its leadership exactly as
// a stopped process would. Work already running continues, as it would
// until the scheduler stopped the process. The zero value is thawed.
type Freezer struct {
	frozen atomic.Pointer[chan struct{}] // non-nil while frozen
}

// Freeze starts a pause.
func (f *Freezer) Freeze() {
	ch := make(chan struct{})
	f.frozen.CompareAndSwap(nil, &ch)
}

// Thaw ends a pause.
func (f *Freezer) Thaw() {
	if ch := f.frozen.Swap(nil); ch != nil {
		close(*ch)
	}
}

// Gate blocks while frozen, or until ctx ends (its error is returned).
func (f *Freezer) Gate(ctx context.Context) error {
	ch := f.frozen.Load()
	if ch == nil {
		return nil
	}
	select {
	case <-*ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
