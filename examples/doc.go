// Package examples holds the example classes shipped in the durable binary:
// Batcher, Counter, Reminder and Cleaner, plus Witness, the chaos workload's
// class. They follow Cloudflare's Alarms API
// examples and exercise every part of the runtime: restoring state in the
// factory under BlockConcurrencyWhile, ordered List, DeleteAll, setting,
// reading and re-arming alarms, and delivering to an upstream HTTP endpoint
// with an idempotency key so at-least-once delivery can be deduplicated.
//
// Beside them, each with its own ten-line main (cli.Main): examples/chat
// (a chat room whose messages expire by alarm, typed methods, and a
// per-user inbox each mention calls),
// examples/ratelimit (a token bucket on the object's clock) and
// examples/usermain (the smallest user's binary); docs/guide.md walks
// through them.
package examples

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/durable-run/durable/node"
)

// Config is what the example classes need from their host.
type Config struct {
	// Upstream is the URL Batcher and Reminder POST deliveries to.
	Upstream string
	// HTTP sends deliveries; nil means a client with a 10 s timeout.
	HTTP *http.Client
	// BatchDelay is how long Batcher collects a batch; 0 means BatchDelay
	// (10 s, as in Cloudflare's example).
	BatchDelay time.Duration
}

func (c Config) batchDelay() time.Duration {
	if c.BatchDelay > 0 {
		return c.BatchDelay
	}
	return BatchDelay
}

// post delivers body to the upstream with an idempotency key. Any non-2xx
// answer is an error, so the alarm is retried.
func (c Config) post(ctx context.Context, path, key string, body []byte) error {
	if c.Upstream == "" {
		return fmt.Errorf("no upstream configured")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Upstream+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("deliver to %s: %w", c.Upstream, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("deliver to %s: upstream answered %s", c.Upstream, resp.Status)
	}
	return nil
}

// Register adds every example class to reg.
func Register(reg *node.Registry, cfg Config) error {
	for _, err := range []error{
		node.RegisterClass(reg, "Batcher", newBatcher(cfg)),
		node.RegisterClass(reg, "Counter", newCounter),
		node.RegisterClass(reg, "Reminder", newReminder(cfg)),
		node.RegisterClass(reg, "Cleaner", newCleaner(cfg)),
		node.RegisterClass(reg, "Witness", newWitness(cfg)),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
