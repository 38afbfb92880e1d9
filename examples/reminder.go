package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/durable-run/durable"
)

// Reminder holds one message for a time. "set" takes JSON
// {"message": "...", "at": "<RFC 3339>"} or {"message": "...", "in": "90s"};
// "get" returns the pending reminder (or null); "cancel" removes it. When the
// alarm fires the reminder is POSTed to <upstream>/reminders with
// Idempotency-Key "<object id>/<scheduled unix ms>" and then deleted.
type Reminder struct {
	cfg   Config
	state durable.State
}

func newReminder(cfg Config) func(context.Context, durable.State) (*Reminder, error) {
	return func(_ context.Context, st durable.State) (*Reminder, error) {
		return &Reminder{cfg: cfg, state: st}, nil
	}
}

const reminderKey = "reminder"

// ReminderRecord is the stored reminder.
type ReminderRecord struct {
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Delivery is what Reminder POSTs.
type Delivery struct {
	Object    string    `json:"object"`
	Name      string    `json:"name,omitempty"`
	Message   string    `json:"message"`
	Scheduled time.Time `json:"scheduled"`
	Fired     time.Time `json:"fired"`
	Retry     int       `json:"retry"`
}

// Invoke handles set, get and cancel.
func (r *Reminder) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := r.state.Storage()
	switch method {
	case "set":
		var req struct {
			Message string `json:"message"`
			At      string `json:"at"`
			In      string `json:"in"`
		}
		if err := json.Unmarshal(payload, &req); err != nil {
			return nil, fmt.Errorf("set: payload must be JSON {\"message\", \"at\" or \"in\"}: %w", err)
		}
		var at time.Time
		switch {
		case req.At != "" && req.In != "":
			return nil, fmt.Errorf("set: give \"at\" or \"in\", not both")
		case req.At != "":
			t, err := time.Parse(time.RFC3339Nano, req.At)
			if err != nil {
				return nil, fmt.Errorf("set: at: %w", err)
			}
			at = t
		case req.In != "":
			d, err := time.ParseDuration(req.In)
			if err != nil {
				return nil, fmt.Errorf("set: in: %w", err)
			}
			at = r.state.Clock().Now().Add(d)
		default:
			return nil, fmt.Errorf("set: \"at\" or \"in\" is required")
		}
		rec := ReminderRecord{Message: req.Message, At: at.UTC()}
		b, _ := json.Marshal(rec)
		if err := s.Put(ctx, reminderKey, b); err != nil {
			return nil, err
		}
		if err := s.SetAlarm(ctx, at); err != nil {
			return nil, err
		}
		return b, nil
	case "get":
		v, ok, err := s.Get(ctx, reminderKey)
		if err != nil {
			return nil, err
		}
		if !ok {
			return []byte("null"), nil
		}
		return v, nil
	case "cancel":
		existed, err := s.Delete(ctx, reminderKey)
		if err != nil {
			return nil, err
		}
		if err := s.DeleteAlarm(ctx); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]bool{"cancelled": existed})
	}
	return nil, fmt.Errorf("unknown method %q (want set, get or cancel)", method)
}

// Alarm delivers the reminder, then deletes it.
func (r *Reminder) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	s := r.state.Storage()
	v, ok, err := s.Get(ctx, reminderKey)
	if err != nil || !ok {
		return err
	}
	var rec ReminderRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return fmt.Errorf("corrupt reminder: %w", err)
	}
	d := Delivery{
		Object: r.state.ID().String(), Name: r.state.Name(), Message: rec.Message,
		Scheduled: info.ScheduledTime.UTC(), Fired: r.state.Clock().Now().UTC(), Retry: info.RetryCount,
	}
	body, _ := json.Marshal(d)
	key := fmt.Sprintf("%s/%d", d.Object, info.ScheduledTime.UnixMilli())
	if err := r.cfg.post(ctx, "/reminders", key, body); err != nil {
		return err
	}
	_, err = s.Delete(ctx, reminderKey)
	return err
}
