package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/durable-run/durable"
)

// BatchDelay is how long Batcher collects items before delivering them by
// default.
const BatchDelay = 10 * time.Second

const (
	batcherItemPrefix = "item/"
	batcherSeqKey     = "batch-seq"
)

// Batcher queues items (method "add") and delivers them as one batch, ten
// seconds (Config.BatchDelay) after the first item of the batch, as a JSON array POSTed to
// <upstream>/batches with Idempotency-Key "<object id>/<batch sequence>".
//
// Items are stored under zero-padded keys so their byte order is their
// arrival order; the factory restores the count from the last key, as in
// Cloudflare's example.
type Batcher struct {
	cfg   Config
	state durable.State
	count int
}

func newBatcher(cfg Config) func(context.Context, durable.State) (*Batcher, error) {
	return func(ctx context.Context, st durable.State) (*Batcher, error) {
		b := &Batcher{cfg: cfg, state: st}
		err := st.BlockConcurrencyWhile(ctx, func(ctx context.Context) error {
			last, err := st.Storage().List(ctx, durable.ListOptions{Prefix: batcherItemPrefix, Reverse: true, Limit: 1})
			if err != nil || len(last) == 0 {
				return err
			}
			b.count, err = strconv.Atoi(strings.TrimPrefix(last[0].Key, batcherItemPrefix))
			return err
		})
		return b, err
	}
}

func itemKey(n int) string { return fmt.Sprintf("%s%010d", batcherItemPrefix, n) }

// Invoke handles "add" (payload: the item) and "count".
func (b *Batcher) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := b.state.Storage()
	switch method {
	case "add":
		if _, ok, err := s.GetAlarm(ctx); err != nil {
			return nil, err
		} else if !ok {
			if err := s.SetAlarm(ctx, b.state.Clock().Now().Add(b.cfg.batchDelay())); err != nil {
				return nil, err
			}
		}
		if err := s.Put(ctx, itemKey(b.count+1), payload); err != nil {
			return nil, err
		}
		b.count++
		return json.Marshal(map[string]int{"queued": b.count})
	case "count":
		return json.Marshal(map[string]int{"queued": b.count})
	}
	return nil, fmt.Errorf("unknown method %q (want add or count)", method)
}

// Batch is what Batcher delivers.
type Batch struct {
	Object string   `json:"object"`
	Name   string   `json:"name,omitempty"`
	Seq    int      `json:"seq"`
	Items  []string `json:"items"`
}

// Alarm delivers the batch, then clears it.
func (b *Batcher) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	s := b.state.Storage()
	items, err := s.List(ctx, durable.ListOptions{Prefix: batcherItemPrefix})
	if err != nil {
		return err
	}
	seq := 0
	if v, ok, err := s.Get(ctx, batcherSeqKey); err != nil {
		return err
	} else if ok {
		if seq, err = strconv.Atoi(string(v)); err != nil {
			return fmt.Errorf("corrupt batch sequence %q: %w", v, err)
		}
	}
	if len(items) > 0 {
		batch := Batch{Object: b.state.ID().String(), Name: b.state.Name(), Seq: seq}
		for _, it := range items {
			batch.Items = append(batch.Items, string(it.Value))
		}
		body, _ := json.Marshal(batch)
		key := fmt.Sprintf("%s/%d", batch.Object, seq)
		if err := b.cfg.post(ctx, "/batches", key, body); err != nil {
			return err
		}
	}
	if err := s.DeleteAll(ctx); err != nil {
		return err
	}
	if err := s.Put(ctx, batcherSeqKey, []byte(strconv.Itoa(seq+1))); err != nil {
		return err
	}
	b.count = 0
	return nil
}
