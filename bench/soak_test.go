package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/bench/benchclass"
)

// TestSoakTinyRun runs a two-second soak at 200 alarms/s (200 objects each
// firing every second) on a two-node cluster and checks the report's shape
// and that its counts add up — every alarm due fired once and committed,
// the intervals cover the duration — and that each verdict agrees with its
// numbers. It asserts no timing: the verdicts may go either way.
func TestSoakTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	s := SoakScenario{Rate: 200, Duration: 2 * time.Second, Period: time.Second, Interval: time.Second}
	rep, err := Run(ctx, []Scenario{s}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)
	var rows []Result
	for _, r := range rep.Results {
		if r.Scenario == "soak" {
			rows = append(rows, r)
		}
	}
	require.Len(t, rows, 3, "the overall row and one per interval")

	all := rows[0]
	require.Equal(t, "200/s for 2s", all.Case)
	requireSane(t, all)
	require.EqualValues(t, 400, all.Extra["armed"])
	require.EqualValues(t, 400, all.Extra["fired"], "every alarm due ran")
	require.EqualValues(t, 400, all.Count, "every alarm due committed")
	require.EqualValues(t, 200, all.Extra["objects"])
	require.Zero(t, all.Extra["early_runs"])
	require.Zero(t, all.Extra["unfired"])
	require.EqualValues(t, 200, all.Extra["min_resident_objects"], "every object stayed in memory")
	require.Zero(t, all.Extra["stray_runs"])
	require.EqualValues(t, all.Extra["runs"], all.Extra["fired"]+all.Extra["duplicate_runs"]+all.Extra["stray_runs"])
	require.NotEmpty(t, all.Ceilings)
	require.Positive(t, all.Latency.P999)

	var armed, fired, committed, seconds float64
	for i, r := range rows[1:] {
		require.Equal(t, []string{"0s–1s", "1s–2s"}[i], r.Case)
		require.Equal(t, r.Extra["armed"], r.Extra["fired"], "%s: every alarm due in it fired", r.Case)
		require.NotNil(t, r.Latency, r.Case)
		for _, k := range []string{"rss_mb", "heap_live_mb", "gc_pause_ms", "resident_objects"} {
			require.Contains(t, r.Extra, k, r.Case)
		}
		require.Positive(t, r.Extra["heap_live_mb"], r.Case)
		armed += r.Extra["armed"]
		fired += r.Extra["fired"]
		committed += float64(r.Count)
		seconds += r.Seconds
	}
	require.Equal(t, 400.0, armed)
	require.Equal(t, 400.0, fired)
	require.Equal(t, float64(all.Count), committed+all.Extra["committed_after_end"])
	require.InDelta(t, 2.0, seconds, 1e-9, "the intervals cover the duration")

	names := []string{}
	met := true
	for _, g := range all.Goals {
		names = append(names, g.Name)
		met = met && g.Met
		switch g.Op {
		case ">=":
			require.Equal(t, g.Actual >= g.Value, g.Met, g.String())
		case "<=":
			require.Equal(t, g.Actual <= g.Value, g.Met, g.String())
		}
		if !g.Met {
			require.InDelta(t, g.Miss, max(g.Value-g.Actual, g.Actual-g.Value), 1e-9, g.String())
		}
	}
	require.Equal(t, []string{"rate", "p50", "p99", "max", "heap flat", "resident"}, names)
	require.Equal(t, &Target{Metric: all.Target.Metric, Op: "all", Met: met}, all.Target)
	require.InDelta(t, 198, all.Goals[0].Value, 1e-9, "0.99 of the rate")

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	for _, k := range []string{`"goals"`, `"p999_ms"`, `"heap_live_mb"`, `"gc_pause_total_ms"`} {
		require.Contains(t, js.String(), k)
	}
	var back Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, all.Goals, back.Results[len(back.Results)-3].Goals)
	var tbl strings.Builder
	require.NoError(t, rep.WriteTable(&tbl))
	require.Contains(t, tbl.String(), "200/s for 2s: goal rate >= 198 alarms/s: ")
}

func TestSoakPlanSpreadsTheAlarmsEvenly(t *testing.T) {
	s := SoakScenario{Rate: 20000, Duration: 25 * time.Second, Period: 5 * time.Second, Interval: 10 * time.Second}
	p := newSoakPlan(s, time.UnixMilli(1_000_000))
	require.Equal(t, 100000, p.n)
	require.Equal(t, 3, p.intervals)
	require.Equal(t, 5*time.Second, p.length(2))
	require.Equal(t, []int64{200000, 200000, 100000}, p.armed())
	require.Equal(t, -1, p.interval(p.endMS))
	require.Equal(t, 0, p.interval(p.startMS))
	// 20 objects per millisecond.
	require.EqualValues(t, p.startMS, p.first(19))
	require.EqualValues(t, p.startMS+1, p.first(20))
}

// TestSoakCountsAlarmsNotRunAsLate: alarms that never ran by the cut-off
// are counted, each in its interval, with the cut-off as a lower bound of
// its lateness.
func TestSoakCountsAlarmsNotRunAsLate(t *testing.T) {
	s := SoakScenario{Rate: 2, Duration: 4 * time.Second, Period: time.Second, Interval: 2 * time.Second}
	T := time.UnixMilli(1_000_000)
	p := newSoakPlan(s, T)
	rec := newSoakRecord(p, []string{"a", "b"})
	ids := make([]durable.ID, 2)
	for id, i := range rec.idx {
		ids[i] = id
	}
	// Object 0 is due at 0, 1, 2 and 3 s and ran the first two; object 1,
	// due at 0.5, 1.5, 2.5 and 3.5 s, ran none.
	for _, at := range []int64{0, 1000} {
		rec.fire(ids[0], benchclass.Fire{Scheduled: T.Add(time.Duration(at) * time.Millisecond), Start: T.Add(time.Duration(at+3) * time.Millisecond)})
	}
	rec.censor(T.Add(10 * time.Second))
	require.Equal(t, []int64{2, 4}, rec.unfired)
	require.EqualValues(t, 2, rec.fired[0].Load())
	require.EqualValues(t, 4, rec.hist[0].Len())
	require.InEpsilon(t, float64(9500*time.Millisecond), float64(rec.hist[0].Percentile(100)), 0.004,
		"object 1's first alarm, due at 0.5 s, had not run at 10 s")
	require.InEpsilon(t, float64(3*time.Millisecond), float64(rec.hist[0].Percentile(50)), 0.004)
}

func TestSoakRefusesWhatItCannotMeasure(t *testing.T) {
	for _, tc := range []struct {
		s    SoakScenario
		want string
	}{
		{SoakScenario{Rate: -1}, "rate -1 must be positive"},
		{SoakScenario{Duration: time.Second}, "duration 1s must be at least the period 5s"},
		{SoakScenario{Period: 1500 * time.Microsecond}, "period 1.5ms must be a whole number of milliseconds"},
		{SoakScenario{Rate: 0.01, Period: time.Second, Duration: time.Second}, "at least one is needed"},
	} {
		require.ErrorContains(t, tc.s.WithDefaults(Profile{}).Validate(), tc.want)
	}
	require.NoError(t, SoakScenario{}.WithDefaults(ShortProfile()).Validate())
	require.Equal(t, time.Minute, SoakScenario{}.WithDefaults(ShortProfile()).Duration)
	require.Equal(t, 5*time.Minute, SoakScenario{}.WithDefaults(FullProfile()).Duration)
}

func TestGoalSaysByHowMuchItWasMissed(t *testing.T) {
	g := NewGoal("p99", "<=", 50, 80.5, "ms")
	require.False(t, g.Met)
	require.InDelta(t, 30.5, g.Miss, 1e-9)
	require.Equal(t, "p99 <= 50.0 ms: MISSED by 30.5 (80.5)", g.String())
	g = NewGoal("rate", ">=", 19800, 19900, "alarms/s")
	require.True(t, g.Met)
	require.Zero(t, g.Miss)
	require.Equal(t, "rate >= 19,800 alarms/s: met (19,900)", g.String())
}
