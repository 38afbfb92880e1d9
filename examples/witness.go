package examples

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// Witness is the chaos workload's class. Every event it runs — invocation
// or alarm, successful or not — is reported to the upstream at /witness with
// the node and fencing token it ran under and its start and end times, so a
// checker can prove that no object ran twice at once and no alarm fired early
// or got lost. It keeps a counter and arms alarms at exact times.
//
// Methods:
//   - "add" (payload: an integer) adds to the counter and returns
//     {"value": new value};
//   - "read" returns {"value": current value};
//   - "arm" (payload: {"at_ms": Unix ms, "flaky": n}) sets the alarm at
//     at_ms; its handler fails on purpose on its first n runs.
//
// A report that cannot be delivered fails the event, so the record of
// every event that took effect reaches the upstream.
type Witness struct {
	state durable.State
	cfg   Config
}

// WitnessEvent is what a Witness reports of one event.
type WitnessEvent struct {
	Object    string    `json:"object"`
	Kind      string    `json:"kind"` // "invoke:<method>" or "alarm"
	Node      string    `json:"node"`
	Token     int64     `json:"token"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Scheduled time.Time `json:"scheduled,omitzero"` // alarms: the time it was set for
	Retry     int       `json:"retry,omitempty"`
	Failed    bool      `json:"failed,omitempty"` // the handler returned an error
}

const witnessFlakyKey = "flaky"

func newWitness(cfg Config) func(context.Context, durable.State) (*Witness, error) {
	return func(_ context.Context, st durable.State) (*Witness, error) {
		return &Witness{state: st, cfg: cfg}, nil
	}
}

// report posts ev with a key unique to this run.
func (w *Witness) report(ctx context.Context, ev WitnessEvent) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	body, _ := json.Marshal(ev)
	return w.cfg.post(ctx, "/witness", hex.EncodeToString(b[:]), body)
}

func (w *Witness) event(ctx context.Context, kind string) WitnessEvent {
	ei, _ := node.EventInfoFrom(ctx)
	return WitnessEvent{Object: w.state.Name(), Kind: kind, Node: ei.Node, Token: ei.Token, Start: time.Now()}
}

// Invoke handles add, read and arm.
func (w *Witness) Invoke(ctx context.Context, method string, payload []byte) (out []byte, err error) {
	ev := w.event(ctx, "invoke:"+method)
	defer func() {
		ev.End, ev.Failed = time.Now(), err != nil
		if rerr := w.report(ctx, ev); rerr != nil && err == nil {
			out, err = nil, fmt.Errorf("witness: report: %w", rerr)
		}
	}()
	s := w.state.Storage()
	switch method {
	case "add", "read":
		v, _, err := s.Get(ctx, "value")
		if err != nil {
			return nil, err
		}
		n, _ := strconv.ParseInt(string(v), 10, 64)
		if method == "add" {
			d, err := strconv.ParseInt(string(payload), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("add: payload must be an integer: %w", err)
			}
			n += d
			if err := s.Put(ctx, "value", []byte(strconv.FormatInt(n, 10))); err != nil {
				return nil, err
			}
		}
		return json.Marshal(map[string]int64{"value": n})
	case "arm":
		var req struct {
			AtMs  int64 `json:"at_ms"`
			Flaky int   `json:"flaky"`
		}
		if err := json.Unmarshal(payload, &req); err != nil || req.AtMs <= 0 || req.Flaky < 0 {
			return nil, errors.New(`arm: payload must be {"at_ms": Unix ms > 0, "flaky": n >= 0}`)
		}
		if err := s.Put(ctx, witnessFlakyKey, []byte(strconv.Itoa(req.Flaky))); err != nil {
			return nil, err
		}
		return nil, s.SetAlarm(ctx, time.UnixMilli(req.AtMs))
	}
	return nil, fmt.Errorf("unknown method %q (want add, read or arm)", method)
}

// Alarm reports the run and fails on purpose while RetryCount < flaky.
func (w *Witness) Alarm(ctx context.Context, info durable.AlarmInfo) (err error) {
	ev := w.event(ctx, "alarm")
	ev.Scheduled, ev.Retry = info.ScheduledTime, info.RetryCount
	defer func() {
		ev.End, ev.Failed = time.Now(), err != nil
		if rerr := w.report(ctx, ev); rerr != nil && err == nil {
			err = fmt.Errorf("witness: report: %w", rerr)
		}
	}()
	v, _, err := w.state.Storage().Get(ctx, witnessFlakyKey)
	if err != nil {
		return err
	}
	if flaky, _ := strconv.Atoi(string(v)); info.RetryCount < flaky {
		return fmt.Errorf("failing on purpose (run %d of %d flaky)", info.RetryCount+1, flaky)
	}
	return nil
}
