package alarmstore

import (
	"time"
)

// Policy is the rule for what an alarm run's outcome does to the alarm
// (DESIGN §1, "Alarm execution guarantees", rules 4–7).
type Policy struct {
	// MaxRetries is the number of retries after a failed run (6: seven runs).
	MaxRetries int
	// BaseDelay is the delay before the first retry; each retry doubles it
	// (2 s, 4 s, … 64 s).
	BaseDelay time.Duration
	// MaxJitter is the largest jitter added to a retry delay, as a fraction
	// of it (0.25: up to 25 %).
	MaxJitter float64
	// SystemRetryDelay is how long a run that failed in the system waits
	// before it runs again; it doubles with each consecutive system
	// failure of the object, up to MaxSystemRetryDelay (etcd full or
	// unreachable must not be hammered every second).
	SystemRetryDelay, MaxSystemRetryDelay time.Duration
	// Jitter returns a float in [0, 1); nil means no jitter.
	Jitter func() float64
}

// MaxRetries is the number of retries after a failed alarm run (7 runs).
const MaxRetries = 6

// DefaultPolicy returns the contract's policy with jitter from jitter.
func DefaultPolicy(jitter func() float64) Policy {
	return Policy{MaxRetries: MaxRetries, BaseDelay: 2 * time.Second, MaxJitter: 0.25,
		SystemRetryDelay: time.Second, MaxSystemRetryDelay: 30 * time.Second, Jitter: jitter}
}

// Outcome is how one run of an alarm ended.
type Outcome struct {
	// Failed: the handler returned an error, panicked or ran past its
	// limit.
	Failed bool
	// System: the failure was the system's (storage unavailable, ownership
	// lost, the node stopping), not the handler's. Only with Failed.
	System bool
	// Touched: the handler set or deleted the alarm; Replacement is the
	// alarm it left (nil: deleted).
	Touched     bool
	Replacement *Record
	// Err is the failure, recorded as the alarm's last error.
	Err error
	// SystemFailures is the number of system failures of the object in a
	// row before this run.
	SystemFailures int
}

// Action is what happens to an alarm after a run.
type Action int

const (
	// Delete: the run succeeded; the alarm is deleted with its writes.
	Delete Action = iota
	// Replace: the handler set or deleted the alarm; that stands (Next, nil
	// for deleted) whether the run succeeded or failed.
	Replace
	// Retry: the handler failed; the alarm runs again at Next.Due with
	// Next.RetryCount one higher.
	Retry
	// Abandon: the handler failed its last retry; the alarm is deleted and
	// Dead is recorded as a dead letter.
	Abandon
	// RunAgain: the system failed; nothing is written and the alarm runs
	// again at At with the same retry count.
	RunAgain
)

var actionNames = [...]string{"delete", "replace", "retry", "abandon", "run again"}

func (a Action) String() string { return actionNames[a] }

// Decision is the outcome of Next.
type Decision struct {
	Action Action
	// Next is the alarm after the run (Replace, Retry).
	Next *Record
	// Dead is the abandoned alarm with its last error (Abandon).
	Dead *Record
	// At is when to look at the alarm again (RunAgain).
	At time.Time
	// CommitWrites reports whether the handler's storage writes commit:
	// only a successful run's do.
	CommitWrites bool
}

// Next decides what the run of rec that ended with o at now does to the
// alarm. It is a pure function: everything it depends on is an argument.
func (p Policy) Next(rec Record, o Outcome, now time.Time) Decision {
	switch {
	case !o.Failed && o.Touched:
		return Decision{Action: Replace, Next: o.Replacement, CommitWrites: true}
	case !o.Failed:
		return Decision{Action: Delete, CommitWrites: true}
	case o.System:
		// Not the handler's failure: it does not count against the retries.
		return Decision{Action: RunAgain, At: now.Add(p.SystemBackoff(o.SystemFailures))}
	case o.Touched:
		// Set-then-fail and delete-then-fail: the change stands, no retry.
		return Decision{Action: Replace, Next: o.Replacement}
	case rec.RetryCount >= p.MaxRetries:
		dead := rec
		dead.LastError = errString(o.Err)
		return Decision{Action: Abandon, Dead: &dead}
	}
	next := rec
	next.RetryCount++
	next.LastError = errString(o.Err)
	next.Due = CeilMillis(now.Add(p.Backoff(rec.RetryCount)))
	return Decision{Action: Retry, Next: &next}
}

// Backoff returns the delay before retry number retry+1: BaseDelay · 2^retry
// plus up to MaxJitter of it.
func (p Policy) Backoff(retry int) time.Duration {
	base := p.BaseDelay << retry
	j := 0.0
	if p.Jitter != nil {
		j = p.Jitter()
	}
	return base + time.Duration(float64(base)*p.MaxJitter*j)
}

// SystemBackoff returns the wait after the (failures+1)-th system failure
// in a row: SystemRetryDelay · 2^failures, at most MaxSystemRetryDelay,
// plus up to MaxJitter of it.
func (p Policy) SystemBackoff(failures int) time.Duration {
	d := p.SystemRetryDelay
	for range min(failures, 30) {
		if d >= p.MaxSystemRetryDelay {
			break
		}
		d *= 2
	}
	if p.MaxSystemRetryDelay > 0 {
		d = min(d, p.MaxSystemRetryDelay)
	}
	j := 0.0
	if p.Jitter != nil {
		j = p.Jitter()
	}
	return d + time.Duration(float64(d)*p.MaxJitter*j)
}

// CeilMillis rounds t up to a whole millisecond: alarm times are stored in
// milliseconds, and rounding down could fire an alarm early.
func CeilMillis(t time.Time) time.Time {
	tr := t.Truncate(time.Millisecond)
	if tr.Before(t) {
		tr = tr.Add(time.Millisecond)
	}
	return tr
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
