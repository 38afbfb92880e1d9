package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/sink"
)

// Workload drives Witness objects through a client and records what it
// asked for and what it was told: alarms at known times on fresh objects
// (some failing on purpose to exercise retries) and counter adds and reads
// on a few shared objects from several workers at once.
type Workload struct {
	Client *client.Client
	// Prefix starts every object name, so runs never share objects.
	Prefix string
	// ArmEvery is the pause between two alarms set (default 20 ms).
	ArmEvery time.Duration
	// DueMin and DueMax bound how far ahead alarms are set (default 1–6 s).
	DueMin, DueMax time.Duration
	// FlakyEvery makes every n-th alarm fail on purpose once (default 10).
	FlakyEvery int
	// Counters is the number of counter objects, Workers the goroutines
	// operating on them (defaults 8 and 6).
	Counters, Workers int
	// Timeout bounds one call, retries included (default 10 s).
	Timeout time.Duration
	// Seed makes the choices reproducible.
	Seed uint64

	mu     sync.Mutex
	alarms []AlarmSet
	ops    []Op
}

func (w *Workload) defaults() {
	if w.ArmEvery <= 0 {
		w.ArmEvery = 20 * time.Millisecond
	}
	if w.DueMin <= 0 {
		w.DueMin = time.Second
	}
	if w.DueMax <= w.DueMin {
		w.DueMax = w.DueMin + 5*time.Second
	}
	if w.FlakyEvery <= 0 {
		w.FlakyEvery = 10
	}
	if w.Counters <= 0 {
		w.Counters = 8
	}
	if w.Workers <= 0 {
		w.Workers = 6
	}
	if w.Timeout <= 0 {
		w.Timeout = 10 * time.Second
	}
}

// outcome classifies a call's error. Only success is certain: even an
// error the server marked retryable may follow an earlier attempt (retried
// inside the client) that broke mid-call and did take effect.
func outcome(err error) Outcome {
	if err == nil {
		return OK
	}
	return Unknown
}

// Run sets alarms and operates counters until ctx ends.
func (w *Workload) Run(ctx context.Context) {
	w.defaults()
	var wg sync.WaitGroup
	wg.Add(1 + w.Workers)
	go func() { defer wg.Done(); w.armLoop(ctx) }()
	for k := 0; k < w.Workers; k++ {
		go func() { defer wg.Done(); w.counterLoop(ctx, rand.New(rand.NewPCG(w.Seed, uint64(k)+1))) }()
	}
	wg.Wait()
}

func (w *Workload) armLoop(ctx context.Context) {
	rng := rand.New(rand.NewPCG(w.Seed, 0))
	tick := time.NewTicker(w.ArmEvery)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := time.Now().Add(w.DueMin + time.Duration(rng.Int64N(int64(w.DueMax-w.DueMin)))).Truncate(time.Millisecond)
		a := AlarmSet{Object: fmt.Sprintf("%salarm-%d", w.Prefix, k), Due: due}
		if k%w.FlakyEvery == w.FlakyEvery-1 {
			a.Flaky = 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload, _ := json.Marshal(map[string]int64{"at_ms": a.Due.UnixMilli(), "flaky": int64(a.Flaky)})
			a.Call = time.Now()
			_, err := w.invoke(a.Object, "arm", payload)
			a.Return, a.Result = time.Now(), outcome(err)
			w.mu.Lock()
			w.alarms = append(w.alarms, a)
			w.mu.Unlock()
		}()
	}
}

func (w *Workload) counterLoop(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		op := Op{Object: fmt.Sprintf("%scounter-%d", w.Prefix, rng.IntN(w.Counters)), Kind: "read"}
		if rng.IntN(2) == 0 {
			op.Kind, op.Arg = "add", 1+rng.Int64N(5)
		}
		w.do(op)
		time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	}
}

// do runs op and records it.
func (w *Workload) do(op Op) {
	var payload []byte
	if op.Kind == "add" {
		payload = []byte(strconv.FormatInt(op.Arg, 10))
	}
	op.Call = time.Now()
	resp, err := w.invoke(op.Object, op.Kind, payload)
	op.Return, op.Result = time.Now(), outcome(err)
	if err == nil {
		var v struct {
			Value int64 `json:"value"`
		}
		if json.Unmarshal(resp, &v) != nil {
			op.Result = Unknown
		}
		op.Out = v.Value
	}
	w.mu.Lock()
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

func (w *Workload) invoke(name, method string, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.Timeout)
	defer cancel()
	resp, err := w.Client.Invoke(ctx, "Witness", client.ByName(name), method, payload)
	return resp.GetPayload(), err
}

// FinalReads reads every counter once more, after the faults, so that every
// write is followed by a read the checker can hold it to.
func (w *Workload) FinalReads() {
	w.defaults()
	for k := 0; k < w.Counters; k++ {
		w.do(Op{Object: fmt.Sprintf("%scounter-%d", w.Prefix, k), Kind: "read"})
	}
}

// Recorded returns what the workload asked for and was told.
func (w *Workload) Recorded() ([]AlarmSet, []Op) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]AlarmSet(nil), w.alarms...), append([]Op(nil), w.ops...)
}

// LastDue is the latest due time of the alarms set so far.
func (w *Workload) LastDue() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, a := range w.alarms {
		if a.Due.After(last) {
			last = a.Due
		}
	}
	return last
}

// ReadEvents fetches the Witness reports a sink at sinkURL recorded, every
// page of them, with hc (nil: http.DefaultClient).
func ReadEvents(ctx context.Context, hc *http.Client, sinkURL string) ([]examples.WitnessEvent, error) {
	ds, err := sink.Fetch(ctx, hc, sinkURL, 0)
	if err != nil {
		return nil, fmt.Errorf("read sink: %w", err)
	}
	var out []examples.WitnessEvent
	for _, d := range ds {
		if d.Path != "/witness" {
			continue
		}
		if d.BodyDropped {
			return nil, fmt.Errorf("read sink: delivery %d: body dropped by the sink's retention cap (MaxRetainedBytes)", d.Seq)
		}
		var ev examples.WitnessEvent
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			return nil, fmt.Errorf("read sink: delivery %d: %w", d.Seq, err)
		}
		out = append(out, ev)
	}
	return out, nil
}
