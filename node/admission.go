package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/durable-run/durable"
)

// Admission control: a node refuses work before its liveness suffers. A
// node that takes more than it can do first delays its own lease renewals
// and commits (its goroutines, its etcd connection and, in `durable dev`,
// etcd itself share two cores), then loses its lease and with it every
// partition — every call fails and every alarm moves. So three things are
// bounded, and refused past the bound with ErrOverloaded (ResourceExhausted,
// reason OVERLOADED) and a retry-after, or, for alarms, deferred in the
// schedule:
//
//   - invocations running or queued here at once (the call limit);
//   - new activations per second, and objects in memory;
//   - alarm deliveries at once (the schedule's running bound).
//
// The call limit is adaptive (see nextLimit); the alarm bound follows it in
// proportion; the activation rate drops only while the lease suffers.
type admission struct {
	maxCalls, minCalls int
	maxActive          int
	maxRate            float64
	maxAlarms          int

	mu         sync.Mutex
	limit      int
	inflight   int
	busy       bool // the limit was reached since the last tick
	retryAfter time.Duration
	callNS     int64 // time admitted calls spent here since the last tick
	calls      int64 // and how many they were

	refused     atomic.Int64
	activations *rate.Limiter
	actShare    float64 // of maxRate: lowered only while the lease suffers
}

// Retry-afters given to refused callers: short while the limit merely
// binds, longer while the node's lease or commits are under pressure.
const (
	retryAfterBusy     = 100 * time.Millisecond
	retryAfterPressure = time.Second
)

func newAdmission(cfg *Config) *admission {
	return &admission{
		maxCalls: cfg.MaxCalls, minCalls: min(cfg.MinCalls, cfg.MaxCalls), maxActive: cfg.MaxActiveObjects,
		maxRate: cfg.MaxActivationRate, maxAlarms: cfg.MaxRunningAlarms,
		limit: cfg.MaxCalls, retryAfter: retryAfterBusy, actShare: 1,
		activations: rate.NewLimiter(rate.Limit(cfg.MaxActivationRate), max(int(cfg.MaxActivationRate/10), 1)),
	}
}

// enter admits one invocation, or refuses it; an admitted one must leave.
func (a *admission) enter() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight >= a.limit {
		a.busy = true
		a.refused.Add(1)
		return withRetryAfter(fmt.Errorf("%w: %d calls in flight on this node (limit %d now)", durable.ErrOverloaded, a.inflight, a.limit), a.retryAfter)
	}
	a.inflight++
	return nil
}

// leave ends an admitted call that spent d here.
func (a *admission) leave(d time.Duration) {
	a.mu.Lock()
	a.inflight--
	a.callNS += int64(d)
	a.calls++
	a.mu.Unlock()
}

// activate admits the activation of a new object while active are in
// memory. Caller holds table.mu.
func (a *admission) activate(active int) error {
	switch {
	case active >= a.maxActive:
		a.refused.Add(1)
		return withRetryAfter(fmt.Errorf("%w: %d objects in memory (limit %d)", durable.ErrOverloaded, active, a.maxActive), retryAfterPressure)
	case !a.activations.Allow():
		a.refused.Add(1)
		a.mu.Lock()
		after := a.retryAfter
		a.mu.Unlock()
		return withRetryAfter(fmt.Errorf("%w: activating more than %.0f objects/s", durable.ErrOverloaded, float64(a.activations.Limit())), after)
	}
	return nil
}

// pressure is what the admission rule looks at, once per tick.
type pressure struct {
	// LeaseMargin is the time left before the node's local lease deadline
	// and TTL the lease's: right before a renewal the margin is about half
	// the TTL; less means a renewal is late.
	LeaseMargin, TTL time.Duration
	// KeepAlive is the round trip of the last renewal; KeepAliveBudget the
	// most it may take before it counts as pressure.
	KeepAlive, KeepAliveBudget time.Duration
	// Commit is the commit Txns' round trip (moving average); CommitTarget
	// the most it may be.
	Commit, CommitTarget time.Duration
	// Call is the mean time admitted calls spent on the node over the tick
	// (queued, run, committed); CallTarget the most it may be: a node that
	// admits more than it completes builds a queue, and every call waits.
	Call, CallTarget time.Duration
	// Busy: calls were refused at the limit since the last tick.
	Busy bool
}

// leaseSuffers reports whether the node's renewals are late or slow: its
// liveness is at stake.
func (p pressure) leaseSuffers() bool {
	return p.LeaseMargin < p.TTL*2/5 || p.KeepAlive > p.KeepAliveBudget
}

// pressured reports whether the node's liveness, its commits or its calls
// suffer.
func (p pressure) pressured() bool {
	return p.leaseSuffers() || p.Commit > p.CommitTarget || p.CallTarget > 0 && p.Call > p.CallTarget
}

// nextLimit is the admission rule, a pure function of the current limit
// and one tick's pressure (additive increase, multiplicative decrease, as
// TCP does for its window): under pressure the limit drops by a quarter
// (to at least lo), so it halves within three ticks; when the limit
// was what refused calls and nothing is under pressure it grows by a
// tenth (at least one, to at most hi); otherwise it stays.
func nextLimit(cur, lo, hi int, p pressure) int {
	switch {
	case p.pressured():
		return max(lo, cur*3/4)
	case p.Busy:
		return min(hi, cur+max(1, cur/10))
	}
	return cur
}

// tick applies one tick's pressure and returns the new call limit and the
// alarm delivery bound that follows it.
func (a *admission) tick(p pressure) (calls, alarms int) {
	a.mu.Lock()
	p.Busy = a.busy
	a.busy = false
	if a.calls > 0 {
		p.Call = time.Duration(a.callNS / a.calls)
	}
	a.callNS, a.calls = 0, 0
	a.limit = nextLimit(a.limit, a.minCalls, a.maxCalls, p)
	a.retryAfter = retryAfterBusy
	if p.pressured() {
		a.retryAfter = retryAfterPressure
	}
	calls = a.limit
	// Activations (reads, memory) slow down only when the lease suffers:
	// the call bound already keeps queues short.
	if p.leaseSuffers() {
		a.actShare = max(a.actShare*3/4, 0.01)
	} else {
		a.actShare = min(a.actShare*1.1, 1)
	}
	act := a.actShare
	a.mu.Unlock()
	// Floors keep a trickle going under pressure, never above the
	// configured bounds.
	a.activations.SetLimit(rate.Limit(min(a.maxRate, max(a.maxRate*act, 100))))
	share := float64(calls) / float64(a.maxCalls)
	return calls, min(a.maxAlarms, max(16, int(float64(a.maxAlarms)*share)))
}

// AdmissionStats is a snapshot of a node's admission control.
type AdmissionStats struct {
	// InFlight invocations run or wait here; Limit is the current bound.
	InFlight, Limit int
	// Refused counts the calls and activations refused as overloaded.
	Refused int64
}

func (a *admission) stats() AdmissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{InFlight: a.inflight, Limit: a.limit, Refused: a.refused.Load()}
}
