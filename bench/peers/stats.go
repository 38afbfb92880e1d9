package main

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// recorder collects, per job sequence number, the instant its handler first
// started and the instant its completion was first observed. It is safe for
// concurrent use by many handler goroutines. Instants are stored as
// nanoseconds since the recorder's epoch (a monotonic clock reading), 0 meaning
// "not seen".
type recorder struct {
	epoch     time.Time
	n         int
	fires     []atomic.Int32 // times the handler started for this job
	fired     []atomic.Int64 // first handler start, ns since epoch
	done      []atomic.Int64 // first observed completion, ns since epoch
	completed atomic.Int64   // jobs with an observed completion
	strays    atomic.Int64   // handler calls or completions for unknown sequence numbers
	allDone   chan struct{}  // closed when every job has an observed completion
}

func newRecorder(n int) *recorder {
	return &recorder{
		epoch:   time.Now(),
		n:       n,
		fires:   make([]atomic.Int32, n),
		fired:   make([]atomic.Int64, n),
		done:    make([]atomic.Int64, n),
		allDone: make(chan struct{}),
	}
}

// now returns the current instant as nanoseconds since the epoch, never 0.
func (r *recorder) now() int64 {
	return max(1, time.Since(r.epoch).Nanoseconds())
}

// at converts an absolute instant to nanoseconds since the epoch using the
// monotonic clock when t carries a reading.
func (r *recorder) at(t time.Time) int64 {
	return t.Sub(r.epoch).Nanoseconds()
}

// fire records that the handler of job seq started. It must be called first
// thing in the handler.
func (r *recorder) fire(seq int) {
	now := r.now()
	if seq < 0 || seq >= r.n {
		r.strays.Add(1)
		return
	}
	if r.fires[seq].Add(1) == 1 {
		r.fired[seq].Store(now)
	}
}

// complete records that job seq's completion was observed now.
func (r *recorder) complete(seq int) {
	r.completeAt(seq, r.now())
}

// completeAt records that job seq's completion was observed at the instant
// now, a value returned by r.now.
func (r *recorder) completeAt(seq int, now int64) {
	if seq < 0 || seq >= r.n {
		r.strays.Add(1)
		return
	}
	if r.done[seq].CompareAndSwap(0, now) && r.completed.Add(1) == int64(r.n) {
		close(r.allDone)
	}
}

// Percentiles of lateness, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summary is what a recorder's samples say about one run.
type summary struct {
	Lateness       Percentiles
	Fired          int           // jobs whose handler started at least once
	Early          int           // jobs whose handler started before the due instant
	Duplicates     int           // extra handler starts beyond the first, summed over jobs
	Missing        int           // jobs whose handler never started
	NotCompleted   int           // jobs that started but whose completion was never observed
	FirstFire      time.Duration // first handler start, relative to due
	LastCompletion time.Duration // last observed completion, relative to due
	FiresPerSecond float64       // completed jobs / LastCompletion
	DrainPerSecond float64       // completed jobs / (LastCompletion - FirstFire)
	Strays         int           // callbacks for sequence numbers outside [0, n)
}

// summarize computes the summary of everything recorded so far for jobs due
// at the given instant.
func (r *recorder) summarize(due time.Time) summary {
	d := r.at(due)
	var s summary
	lateness := make([]time.Duration, 0, r.n)
	var last int64
	first := int64(math.MaxInt64)
	completed := 0
	for i := range r.n {
		starts := r.fires[i].Load()
		switch {
		case starts == 0:
			s.Missing++
		default:
			s.Fired++
			s.Duplicates += int(starts - 1)
			f := r.fired[i].Load()
			first = min(first, f)
			lateness = append(lateness, time.Duration(f-d))
			if c := r.done[i].Load(); c != 0 {
				completed++
				last = max(last, c)
			} else {
				s.NotCompleted++
			}
		}
	}
	s.Lateness, s.Early = latenessPercentiles(lateness)
	if completed > 0 {
		s.LastCompletion = time.Duration(last - d)
		s.FiresPerSecond = throughput(completed, s.LastCompletion)
	}
	if s.Fired > 0 {
		s.FirstFire = time.Duration(first - d)
		if completed > 0 {
			s.DrainPerSecond = throughput(completed, time.Duration(last-first))
		}
	}
	s.Strays = int(r.strays.Load())
	return s
}

// latenessPercentiles sorts samples in place and returns their exact
// nearest-rank percentiles in milliseconds, along with how many samples are
// negative (the job started before it was due).
func latenessPercentiles(samples []time.Duration) (Percentiles, int) {
	if len(samples) == 0 {
		return Percentiles{}, 0
	}
	slices.Sort(samples)
	early, _ := slices.BinarySearch(samples, 0) // index of the first sample >= 0
	return Percentiles{
		P50: ms(percentile(samples, 50)),
		P90: ms(percentile(samples, 90)),
		P99: ms(percentile(samples, 99)),
		Max: ms(samples[len(samples)-1]),
	}, early
}

// percentile returns the nearest-rank p-th percentile of sorted: the smallest
// sample such that at least p percent of all samples are less than or equal
// to it. sorted must be non-empty and in ascending order; 0 < p <= 100.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// throughput is n events over the span d, per second; 0 if d is not positive.
func throughput(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round3(float64(n) / d.Seconds())
}

// ms converts d to milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 {
	return round3(float64(d) / float64(time.Millisecond))
}

func round3(x float64) float64 {
	return math.Round(x*1000) / 1000
}
