package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one operation of a load phase. worker says which caller runs it —
// 0 ≤ worker < Load.Concurrency — so each caller can work on its own
// object. ctx carries the operation's deadline.
type Op func(ctx context.Context, worker int) error

// opTimeout bounds one operation.
const opTimeout = 10 * time.Second

// Load is one load phase: Op run by Concurrency callers for Warmup, then
// measured for Duration.
type Load struct {
	// Name labels the phase on the progress display.
	Name string
	// Concurrency is the number of callers (closed loop) or of objects the
	// operations are spread over (open loop: worker = k mod Concurrency).
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// Unit is what one operation counts as on the progress display
	// ("ops", "txns"…).
	Unit string
	Op   Op
	// MaxInFlight bounds the operations an open loop runs at once (0:
	// 4 × Concurrency, at most 1024). An overload test raises it: real
	// callers do not wait for each other.
	MaxInFlight int
}

// Outcome is what a phase measured.
type Outcome struct {
	// Count operations succeeded and Errors failed in the measured window.
	Count  int64
	Errors int64
	// FirstErr is the first failure, nil without errors.
	FirstErr error
	// Elapsed is the measured window.
	Elapsed time.Duration
	// Samples are the successful operations' latencies.
	Samples Samples
	// Overrun is how long after the window's end the last measured
	// operation finished (open loop: the backlog it left).
	Overrun time.Duration
}

// Rate returns successful operations per second.
func (o *Outcome) Rate() float64 { return Rate(o.Count, o.Elapsed) }

// recorder collects one phase's outcome from concurrent workers.
type recorder struct {
	done  atomic.Int64 // successes in the window, for the progress display
	mu    sync.Mutex
	out   Outcome
	last  time.Time
	local []Samples // per worker, merged at the end
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out.Errors++
	if r.out.FirstErr == nil {
		r.out.FirstErr = err
	}
}

// failures returns the number of failed operations so far.
func (r *recorder) failures() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Errors
}

func (r *recorder) finished(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.After(r.last) {
		r.last = t
	}
}

// result merges the workers' samples and checks that the phase measured
// something.
func (r *recorder) result(ctx context.Context, l Load, end time.Time) (*Outcome, error) {
	for i := range r.local {
		r.out.Samples.Merge(&r.local[i])
	}
	r.out.Count = int64(r.out.Samples.Len())
	r.out.Elapsed = l.Duration
	if r.last.After(end) {
		r.out.Overrun = r.last.Sub(end)
	}
	out := &r.out
	switch {
	case ctx.Err() != nil:
		return out, fmt.Errorf("%s: %w", l.Name, context.Cause(ctx))
	case out.Count == 0 && out.FirstErr != nil:
		return out, fmt.Errorf("%s: all %d operations failed, the first with: %w", l.Name, out.Errors, out.FirstErr)
	case out.Count == 0:
		return out, fmt.Errorf("%s: no operation completed in the measured window", l.Name)
	}
	return out, nil
}

func (l Load) validate() error {
	if l.Concurrency < 1 || l.Duration <= 0 || l.Warmup < 0 || l.Op == nil {
		return fmt.Errorf("bench: load %q: needs concurrency ≥ 1, a positive duration and an op", l.Name)
	}
	return nil
}

// Closed runs a closed loop: Concurrency callers each call Op back to back
// for Warmup + Duration. Operations started in the measured window count,
// however long they take; the phase returns after every caller has
// stopped. It fails if ctx ends or no operation succeeded.
func (l Load) Closed(ctx context.Context, pr *Progress) (*Outcome, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	rec := &recorder{local: make([]Samples, l.Concurrency)}
	start := time.Now()
	from := start.Add(l.Warmup)
	end := from.Add(l.Duration)
	bar := pr.Timed(l.Name, l.Warmup+l.Duration, func() string { return rec.status(l, from) })
	var wg sync.WaitGroup
	var extended atomic.Bool
	for w := range l.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					// A phase measures at least one operation: on a slow
					// machine one may outlast the window (bounded by
					// opTimeout past it).
					if rec.done.Load() > 0 || rec.failures() > 0 || t0.After(end.Add(opTimeout)) {
						return
					}
					extended.Store(true)
				}
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				err := l.Op(octx, w)
				cancel()
				t1 := time.Now()
				if t0.Before(from) {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					rec.fail(err)
					continue
				}
				rec.local[w].Add(t1.Sub(t0))
				rec.done.Add(1)
				if t1.After(end) {
					rec.finished(t1)
				}
			}
		})
	}
	wg.Wait()
	out, err := rec.result(ctx, l, end)
	if extended.Load() && out.Overrun > 0 {
		// The window was stretched until an operation completed.
		out.Elapsed, out.Overrun = out.Elapsed+out.Overrun, 0
	}
	bar.Done(summary(l.Unit, out, err))
	return out, err
}

// ticket is one open-loop operation: its number and intended send time.
type ticket struct {
	k  int
	at time.Time
}

// Open runs an open loop: operations are sent at a fixed rate (per second)
// for Warmup + Duration, whatever the previous ones are doing, and each
// one's latency is measured from its intended send time — a stall delays
// every operation behind it, as it would delay real users. Operation k goes
// to worker k mod Concurrency; up to 4 × Concurrency (at most 1024, or
// MaxInFlight) run at once, and more wait their turn with their clocks
// running.
func (l Load) Open(ctx context.Context, pr *Progress, rate float64) (*Outcome, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	if rate <= 0 {
		return nil, fmt.Errorf("bench: open loop %q: rate %g must be positive", l.Name, rate)
	}
	workers := min(4*l.Concurrency, 1024)
	if l.MaxInFlight > 0 {
		workers = l.MaxInFlight
	}
	rec := &recorder{local: make([]Samples, workers)}
	start := time.Now()
	from := start.Add(l.Warmup)
	end := from.Add(l.Duration)
	bar := pr.Timed(l.Name, l.Warmup+l.Duration, func() string { return rec.status(l, from) })
	tickets := make(chan ticket, 4096)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for t := range tickets {
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				err := l.Op(octx, t.k%l.Concurrency)
				cancel()
				t1 := time.Now()
				if t.at.Before(from) {
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						rec.fail(err)
					}
					continue
				}
				rec.local[w].Add(t1.Sub(t.at))
				rec.done.Add(1)
				if t1.After(end) {
					rec.finished(t1)
				}
			}
		})
	}
	interval := float64(time.Second) / rate
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
send:
	for k := 0; ; k++ {
		at := start.Add(time.Duration(float64(k) * interval))
		if !at.Before(end) {
			break
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break send
			case <-timer.C:
			}
		}
		select {
		case <-ctx.Done():
			break send
		case tickets <- ticket{k: k, at: at}:
		}
	}
	close(tickets)
	wg.Wait()
	out, err := rec.result(ctx, l, end)
	bar.Done(summary(l.Unit, out, err))
	return out, err
}

// status is the progress display's text while a phase runs.
func (r *recorder) status(l Load, from time.Time) string {
	since := time.Since(from)
	if since <= 0 {
		return "warming up"
	}
	return fmt.Sprintf("%s %s/s", number(Rate(r.done.Load(), since)), l.Unit)
}

// summary is a finished phase's progress line.
func summary(unit string, o *Outcome, err error) string {
	if err != nil && !errors.Is(err, context.Canceled) {
		return "failed: " + err.Error()
	}
	s := fmt.Sprintf("%s %s/s", number(o.Rate()), unit)
	if l := o.Samples.Summary(); l != nil {
		s += fmt.Sprintf(", p50 %s ms, p99 %s ms", fmtMS(l.P50), fmtMS(l.P99))
	}
	if o.Errors > 0 {
		s += fmt.Sprintf(", %d errors, the first: %v", o.Errors, o.FirstErr)
	}
	return s
}
