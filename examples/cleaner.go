package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/durable-run/durable"
)

// CleanInterval is how often Cleaner runs; MaxAge is how old an entry may get.
const (
	CleanInterval = time.Hour
	MaxAge        = 24 * time.Hour
)

// Cleaner keeps timestamped entries ("put", payload JSON {"key","value"}) and
// deletes those older than a day in a periodic alarm that re-arms itself every
// hour; the first alarm is set in the factory, as in Cloudflare's
// PeriodicCleaner. "count" returns the number of entries; "put" may also give
// "timestamp" (RFC 3339) to store an entry as of an earlier time.
type Cleaner struct {
	cfg   Config
	state durable.State
}

// CleanerEntry is one stored entry.
type CleanerEntry struct {
	Value     string    `json:"value"`
	Timestamp time.Time `json:"timestamp"`
}

const cleanerPrefix = "entry/"

func newCleaner(cfg Config) func(context.Context, durable.State) (*Cleaner, error) {
	return func(ctx context.Context, st durable.State) (*Cleaner, error) {
		c := &Cleaner{cfg: cfg, state: st}
		err := st.BlockConcurrencyWhile(ctx, func(ctx context.Context) error {
			_, ok, err := st.Storage().GetAlarm(ctx)
			if err != nil || ok {
				return err
			}
			return st.Storage().SetAlarm(ctx, st.Clock().Now().Add(CleanInterval))
		})
		return c, err
	}
}

// Invoke handles put and count.
func (c *Cleaner) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := c.state.Storage()
	switch method {
	case "put":
		var req struct {
			Key       string     `json:"key"`
			Value     string     `json:"value"`
			Timestamp *time.Time `json:"timestamp"`
		}
		if err := json.Unmarshal(payload, &req); err != nil {
			return nil, fmt.Errorf("put: payload must be JSON {\"key\", \"value\"}: %w", err)
		}
		e := CleanerEntry{Value: req.Value, Timestamp: c.state.Clock().Now().UTC()}
		if req.Timestamp != nil {
			e.Timestamp = req.Timestamp.UTC()
		}
		b, _ := json.Marshal(e)
		return b, s.Put(ctx, cleanerPrefix+req.Key, b)
	case "count":
		entries, err := s.List(ctx, durable.ListOptions{Prefix: cleanerPrefix})
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int{"entries": len(entries)})
	}
	return nil, fmt.Errorf("unknown method %q (want put or count)", method)
}

// Alarm deletes old entries and re-arms the next run.
func (c *Cleaner) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	s := c.state.Storage()
	entries, err := s.List(ctx, durable.ListOptions{Prefix: cleanerPrefix})
	if err != nil {
		return err
	}
	cutoff := c.state.Clock().Now().Add(-MaxAge)
	var old []string
	for _, kv := range entries {
		var e CleanerEntry
		if json.Unmarshal(kv.Value, &e) == nil && e.Timestamp.Before(cutoff) {
			old = append(old, kv.Key)
		}
	}
	for len(old) > 0 {
		n := min(len(old), durable.MaxKeysPerOp)
		if _, err := s.DeleteMany(ctx, old[:n]); err != nil {
			return err
		}
		old = old[n:]
	}
	return s.SetAlarm(ctx, c.state.Clock().Now().Add(CleanInterval))
}
