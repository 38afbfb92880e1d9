package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestLatenessPercentiles(t *testing.T) {
	tests := []struct {
		name      string
		samplesMS []int
		want      Percentiles
		wantEarly int
	}{
		{"empty", nil, Percentiles{}, 0},
		{"one", []int{7}, Percentiles{P50: 7, P90: 7, P99: 7, Max: 7}, 0},
		{"two", []int{20, 10}, Percentiles{P50: 10, P90: 20, P99: 20, Max: 20}, 0},
		// Nearest rank over 1..100: the p-th percentile is p itself.
		{"1..100", seq(1, 100), Percentiles{P50: 50, P90: 90, P99: 99, Max: 100}, 0},
		// Over 1..1000 the 99th percentile is the 990th value.
		{"1..1000", seq(1, 1000), Percentiles{P50: 500, P90: 900, P99: 990, Max: 1000}, 0},
		// Negative samples are early; zero is on time.
		{"early", []int{-3, -1, 0, 0, 5}, Percentiles{P50: 0, P90: 5, P99: 5, Max: 5}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			samples := make([]time.Duration, len(tt.samplesMS))
			for i, v := range tt.samplesMS {
				samples[i] = time.Duration(v) * time.Millisecond
			}
			// Order must not matter.
			rand.Shuffle(len(samples), func(i, j int) { samples[i], samples[j] = samples[j], samples[i] })
			got, early := latenessPercentiles(samples)
			if got != tt.want || early != tt.wantEarly {
				t.Errorf("latenessPercentiles = %+v, early %d; want %+v, early %d", got, early, tt.want, tt.wantEarly)
			}
		})
	}
}

func TestMsRoundsToMicroseconds(t *testing.T) {
	if got := ms(1234567 * time.Nanosecond); got != 1.235 {
		t.Errorf("ms(1.234567ms) = %v, want 1.235", got)
	}
	if got := ms(-1500 * time.Microsecond); got != -1.5 {
		t.Errorf("ms(-1.5ms) = %v, want -1.5", got)
	}
}

func TestRecorderSummary(t *testing.T) {
	const n = 5
	rec := newRecorder(n)
	due := rec.epoch.Add(time.Second)
	at := func(d time.Duration) int64 { return rec.at(due.Add(d)) }

	// Job 0: on time. Job 1: 10ms late, run twice. Job 2: 5ms early.
	// Job 3: started 20ms late but its completion was never seen. Job 4: never ran.
	starts := map[int][]time.Duration{0: {0}, 1: {10 * time.Millisecond, 30 * time.Millisecond}, 2: {-5 * time.Millisecond}, 3: {20 * time.Millisecond}}
	for seq, ds := range starts {
		for _, d := range ds {
			rec.fires[seq].Add(1)
			rec.fired[seq].CompareAndSwap(0, at(d))
		}
	}
	rec.completeAt(0, at(time.Millisecond))
	rec.completeAt(1, at(40*time.Millisecond))
	rec.completeAt(1, at(90*time.Millisecond)) // a second completion is ignored
	rec.completeAt(2, at(2*time.Millisecond))
	rec.completeAt(n, at(0)) // stray
	rec.fire(-1)             // stray

	s := rec.summarize(due)
	want := summary{
		Lateness:       Percentiles{P50: 0, P90: 20, P99: 20, Max: 20},
		Fired:          4,
		Early:          1,
		Duplicates:     1,
		Missing:        1,
		NotCompleted:   1,
		FirstFire:      -5 * time.Millisecond,
		LastCompletion: 40 * time.Millisecond,
		FiresPerSecond: 75,     // 3 completed jobs over 40ms
		DrainPerSecond: 66.667, // 3 completed jobs over 45ms
		Strays:         2,
	}
	if s != want {
		t.Errorf("summary =\n%+v\nwant\n%+v", s, want)
	}
	select {
	case <-rec.allDone:
		t.Error("allDone closed with jobs still incomplete")
	default:
	}
}

func TestRecorderAllDone(t *testing.T) {
	rec := newRecorder(3)
	for i := range 3 {
		rec.fire(i)
		rec.complete(i)
		rec.complete(i)
	}
	select {
	case <-rec.allDone:
	default:
		t.Fatal("allDone not closed after every job completed")
	}
}

func TestCeilSecond(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if got := ceilSecond(base); !got.Equal(base) {
		t.Errorf("ceilSecond(whole second) = %v, want %v", got, base)
	}
	if got := ceilSecond(base.Add(time.Nanosecond)); !got.Equal(base.Add(time.Second)) {
		t.Errorf("ceilSecond(+1ns) = %v, want %v", got, base.Add(time.Second))
	}
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from+1)
	for v := from; v <= to; v++ {
		s = append(s, v)
	}
	return s
}
