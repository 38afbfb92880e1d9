package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// calm is a tick of a node at ease: a renewal just happened, quickly, and
// commits are fast.
func calm() pressure {
	return pressure{
		LeaseMargin: 2 * time.Second, TTL: 3 * time.Second,
		KeepAlive: 5 * time.Millisecond, KeepAliveBudget: 250 * time.Millisecond,
		Commit: 10 * time.Millisecond, CommitTarget: 250 * time.Millisecond,
	}
}

func TestAdmissionLimitDropsUnderPressureFromLeaseOrCommits(t *testing.T) {
	for name, p := range map[string]func(*pressure){
		"late renewal":    func(p *pressure) { p.LeaseMargin = time.Second },
		"slow renewal":    func(p *pressure) { p.KeepAlive = 300 * time.Millisecond },
		"slow commits":    func(p *pressure) { p.Commit = 400 * time.Millisecond },
		"busy and slowed": func(p *pressure) { p.Commit = time.Second; p.Busy = true },
	} {
		t.Run(name, func(t *testing.T) {
			pr := calm()
			p(&pr)
			require.Equal(t, 750, nextLimit(1000, 64, 4096, pr))
			require.Equal(t, 64, nextLimit(80, 64, 4096, pr), "never below the floor")
		})
	}
}

func TestAdmissionLimitGrowsOnlyWhenItBindsAndAllIsCalm(t *testing.T) {
	busy := calm()
	busy.Busy = true
	require.Equal(t, 1100, nextLimit(1000, 64, 4096, busy))
	require.Equal(t, 6, nextLimit(5, 1, 4096, busy), "at least one more")
	require.Equal(t, 4096, nextLimit(4000, 64, 4096, busy), "never above the ceiling")
	require.Equal(t, 1000, nextLimit(1000, 64, 4096, calm()), "a limit that does not bind stays")
}

func TestAdmissionHalvesWithinThreeTicksAndRecovers(t *testing.T) {
	cfg := DefaultConfig()
	a := newAdmission(&cfg)
	slow := calm()
	slow.Commit = time.Second
	for range 3 {
		a.tick(slow)
	}
	calls, alarms := a.tick(calm())
	require.LessOrEqual(t, calls, cfg.MaxCalls/2+1)
	require.Equal(t, int(float64(cfg.MaxRunningAlarms)*float64(calls)/float64(cfg.MaxCalls)), alarms, "alarm deliveries follow the call bound")
	for range 100 {
		for a.enter() == nil { // fill up: the limit binds
		}
		if calls, _ = a.tick(calm()); calls == cfg.MaxCalls {
			break
		}
	}
	require.Equal(t, cfg.MaxCalls, calls, "the limit came back once calm")
}

// TestAdmissionNeverRaisesTheConfiguredBounds: the floors that keep work
// going under pressure do not lift small configured bounds.
func TestAdmissionNeverRaisesTheConfiguredBounds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRunningAlarms, cfg.MaxActivationRate = 4, 10
	a := newAdmission(&cfg)
	suffering := calm()
	suffering.LeaseMargin = 0
	for _, p := range []pressure{calm(), suffering, suffering, calm()} {
		_, alarms := a.tick(p)
		require.LessOrEqual(t, alarms, cfg.MaxRunningAlarms)
		require.LessOrEqual(t, float64(a.activations.Limit()), cfg.MaxActivationRate)
	}
}

// TestLapseStep: the lease guard cancels once per deadline that passes
// unrenewed — also a second, short one that a late renewal opened and that
// passed between two of its looks — and never before the first renewal.
func TestLapseStep(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name                   string
		now, deadline, handled time.Time
		cancel                 bool
		wait                   time.Duration
	}{
		{"before the deadline: sleep until it", at(0), at(400), time.Time{}, false, 400 * time.Millisecond},
		{"the deadline passed: cancel, then poll", at(400), at(400), time.Time{}, true, leaseGuardPoll},
		{"still the same deadline: poll only", at(450), at(400), at(400), false, leaseGuardPoll},
		{"a late renewal's short window closed between looks", at(470), at(460), at(400), true, leaseGuardPoll},
		{"renewed again: sleep until the new deadline", at(480), at(2000), at(460), false, 1520 * time.Millisecond},
		{"no renewal yet: nothing to cancel", at(0), time.Time{}, time.Time{}, false, leaseGuardPoll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cancel, wait := lapseStep(tc.now, tc.deadline, tc.handled)
			require.Equal(t, tc.cancel, cancel)
			require.Equal(t, tc.wait, wait)
		})
	}
}
