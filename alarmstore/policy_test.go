package alarmstore

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	t0   = time.UnixMilli(1_900_000_000_000)
	boom = errors.New("boom")
)

func pending(retry int) Record {
	return Record{Class: "C", ID: idOf("a"), Name: "a", Partition: 1, Due: t0, Scheduled: t0.Add(-time.Minute), RetryCount: retry}
}

func TestPolicySuccessDeletesTheAlarmWithTheHandlersWrites(t *testing.T) {
	d := DefaultPolicy(nil).Next(pending(3), Outcome{}, t0)
	require.Equal(t, Decision{Action: Delete, CommitWrites: true}, d)
}

func TestPolicyANewAlarmSetByTheHandlerStandsOnSuccessAndOnFailure(t *testing.T) {
	repl := &Record{Class: "C", ID: idOf("a"), Due: t0.Add(time.Hour), Scheduled: t0.Add(time.Hour)}
	ok := DefaultPolicy(nil).Next(pending(0), Outcome{Touched: true, Replacement: repl}, t0)
	require.Equal(t, Decision{Action: Replace, Next: repl, CommitWrites: true}, ok)
	failed := DefaultPolicy(nil).Next(pending(MaxRetries), Outcome{Failed: true, Err: boom, Touched: true, Replacement: repl}, t0)
	require.Equal(t, Decision{Action: Replace, Next: repl}, failed, "set-then-fail: the new alarm stands, the handler's writes do not, no retry")
}

func TestPolicyDeleteThenFailIsNotRetried(t *testing.T) {
	d := DefaultPolicy(nil).Next(pending(0), Outcome{Failed: true, Err: boom, Touched: true}, t0)
	require.Equal(t, Decision{Action: Replace}, d)
}

func TestPolicyRetriesBackOffExponentiallyWithJitter(t *testing.T) {
	for _, tc := range []struct {
		retry  int
		jitter float64
		delay  time.Duration
	}{
		{0, 0, 2 * time.Second},
		{1, 0, 4 * time.Second},
		{5, 0, 64 * time.Second},
		{0, 0.5, 2*time.Second + 250*time.Millisecond}, // 2 s + 0.5 · 25 %
		{5, 0.999, 64*time.Second + 15984*time.Millisecond},
	} {
		p := DefaultPolicy(func() float64 { return tc.jitter })
		d := p.Next(pending(tc.retry), Outcome{Failed: true, Err: boom}, t0)
		require.Equal(t, Retry, d.Action)
		require.False(t, d.CommitWrites, "a failed run's writes are discarded")
		require.Equal(t, tc.retry+1, d.Next.RetryCount)
		require.Equal(t, "boom", d.Next.LastError)
		require.Equal(t, t0.Add(tc.delay), d.Next.Due, "retry %d jitter %v", tc.retry, tc.jitter)
		require.Equal(t, pending(0).Scheduled, d.Next.Scheduled, "a retry keeps the scheduled time")
	}
}

func TestPolicyRetryTimesRoundUpToTheMillisecond(t *testing.T) {
	p := DefaultPolicy(func() float64 { return 0.0000001 })
	d := p.Next(pending(0), Outcome{Failed: true, Err: boom}, t0)
	require.True(t, d.Next.Due.After(t0.Add(2*time.Second)), "never early")
	require.Equal(t, d.Next.Due, d.Next.Due.Truncate(time.Millisecond))
}

func TestPolicyAbandonsAfterTheLastRetry(t *testing.T) {
	d := DefaultPolicy(nil).Next(pending(MaxRetries), Outcome{Failed: true, Err: boom}, t0)
	require.Equal(t, Abandon, d.Action)
	require.Nil(t, d.Next, "the alarm is deleted")
	require.Equal(t, MaxRetries, d.Dead.RetryCount)
	require.Equal(t, "boom", d.Dead.LastError)
}

func TestPolicySystemFailuresDoNotCountAgainstTheRetries(t *testing.T) {
	p := DefaultPolicy(nil)
	d := p.Next(pending(MaxRetries), Outcome{Failed: true, System: true, Err: boom}, t0)
	require.Equal(t, Decision{Action: RunAgain, At: t0.Add(p.SystemRetryDelay)}, d)
}

func TestPolicySystemRetriesBackOffToThirtySeconds(t *testing.T) {
	p := DefaultPolicy(nil)
	for failures, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		d := p.Next(pending(0), Outcome{Failed: true, System: true, Err: boom, SystemFailures: failures}, t0)
		require.Equal(t, t0.Add(want*time.Second), d.At, "after %d system failures", failures)
	}
	require.Equal(t, 30*time.Second, p.SystemBackoff(1000), "no overflow")
	jittered := DefaultPolicy(func() float64 { return 0.5 })
	require.Equal(t, 2*time.Second+250*time.Millisecond, jittered.SystemBackoff(1))
}

func TestCeilMillisRoundsUpNeverDown(t *testing.T) {
	// DESIGN §1: alarm times are kept in milliseconds, rounded up, so that
	// an alarm never fires early (10.0004 s must not fire at 10.000 s).
	base := time.Unix(10, 0)
	cases := []struct {
		name string
		in   time.Time
		want time.Time
	}{
		{"whole millisecond unchanged", base, base},
		{"one nanosecond over", base.Add(time.Nanosecond), base.Add(time.Millisecond)},
		{"0.4 ms over", base.Add(400 * time.Microsecond), base.Add(time.Millisecond)},
		{"just under the next", base.Add(time.Millisecond - time.Nanosecond), base.Add(time.Millisecond)},
		{"before the epoch", time.Unix(-10, 400_000), time.Unix(-10, 1_000_000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CeilMillis(tc.in)
			require.True(t, got.Equal(tc.want), "CeilMillis(%s) = %s, want %s", tc.in, got, tc.want)
			require.False(t, got.Before(tc.in))
			require.True(t, got.Equal(time.UnixMilli(got.UnixMilli())), "a whole millisecond")
		})
	}
}
