package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// Run is one recorded event of a Probe object.
type Run struct {
	Object     string
	Kind       string // "invoke" or "alarm"
	Node       string
	Token      int64 // fencing token the event ran under
	Start, End time.Time
	Scheduled  time.Time // alarms: the time the alarm was set for
}

// Recorder collects the runs of every Probe object of a test.
type Recorder struct {
	mu   sync.Mutex
	runs []Run
}

func (r *Recorder) add(x Run) {
	r.mu.Lock()
	r.runs = append(r.runs, x)
	r.mu.Unlock()
}

// Snapshot returns every run so far.
func (r *Recorder) Snapshot() []Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Run(nil), r.runs...)
}

// Alarms returns the alarm runs by object name.
func (r *Recorder) Alarms() map[string][]Run {
	out := map[string][]Run{}
	for _, x := range r.Snapshot() {
		if x.Kind == "alarm" {
			out[x.Object] = append(out[x.Object], x)
		}
	}
	return out
}

// CheckNoOverlap fails t if two runs of one object overlapped in time: the
// same object active twice at once, on two nodes or under two tokens.
func (r *Recorder) CheckNoOverlap(t testing.TB) {
	t.Helper()
	by := map[string][]Run{}
	for _, x := range r.Snapshot() {
		by[x.Object] = append(by[x.Object], x)
	}
	for obj, runs := range by {
		sort.Slice(runs, func(i, j int) bool { return runs[i].Start.Before(runs[j].Start) })
		for i := 1; i < len(runs); i++ {
			a, b := runs[i-1], runs[i]
			if b.Start.Before(a.End) {
				t.Errorf("object %s: %s run on %s (token %d) overlapped %s run on %s (token %d)",
					obj, b.Kind, b.Node, b.Token, a.Kind, a.Node, a.Token)
			}
		}
	}
}

// Visit is the reply of a Probe's "visit".
type Visit struct {
	Node  string `json:"node"`
	Token int64  `json:"token"`
	N     int    `json:"n"`
}

// RegisterProbe registers the class "Probe", whose objects record in rec
// where each of their events runs. Methods: "visit" counts visits in
// storage and returns a Visit; "arm" sets the alarm at the Unix millisecond
// time in the payload. Alarms succeed.
func RegisterProbe(reg *node.Registry, rec *Recorder) error {
	return node.RegisterClass(reg, "Probe", func(_ context.Context, st durable.State) (*probe, error) {
		return &probe{st: st, rec: rec}, nil
	})
}

type probe struct {
	st  durable.State
	rec *Recorder
}

func (p *probe) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	start := time.Now()
	ei, _ := node.EventInfoFrom(ctx)
	defer func() {
		p.rec.add(Run{Object: p.st.Name(), Kind: "invoke", Node: ei.Node, Token: ei.Token, Start: start, End: time.Now()})
	}()
	s := p.st.Storage()
	switch method {
	case "visit":
		v, _, err := s.Get(ctx, "n")
		if err != nil {
			return nil, err
		}
		n, _ := strconv.Atoi(string(v))
		n++
		if err := s.Put(ctx, "n", []byte(strconv.Itoa(n))); err != nil {
			return nil, err
		}
		return json.Marshal(Visit{Node: ei.Node, Token: ei.Token, N: n})
	case "arm":
		ms, err := strconv.ParseInt(string(payload), 10, 64)
		if err != nil {
			return nil, err
		}
		return nil, s.SetAlarm(ctx, time.UnixMilli(ms))
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

func (p *probe) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	start := time.Now()
	ei, _ := node.EventInfoFrom(ctx)
	p.rec.add(Run{Object: p.st.Name(), Kind: "alarm", Node: ei.Node, Token: ei.Token, Start: start, End: time.Now(), Scheduled: info.ScheduledTime})
	return nil
}
