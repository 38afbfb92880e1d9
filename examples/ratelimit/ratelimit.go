// Package ratelimit is an example class: Limiter, a token bucket per object.
//
// Name one Limiter object per thing to limit (an API key, a user, an IP
// address). Its bucket holds up to Config.Burst tokens and gains
// Config.PerSecond tokens a second; "take" (TakeRequest → TakeReply) takes n
// tokens if the bucket holds them and otherwise says how long to wait.
// "peek" reports the bucket without taking.
//
// Time is read from the object's clock (State.Clock), so tests drive the
// refill with a fake clock. The bucket is stored as one time, when it will
// be full again (the generic cell rate algorithm's "theoretical arrival
// time"): taking n tokens moves it n refill intervals later, and the bucket
// holds Burst minus the intervals between now and that time. Integer
// durations keep it exact (a level kept as a float drifts by a nanosecond
// here and there, and a retry-after rounds up a whole millisecond), and
// nothing runs while nobody calls.
//
// Idle state: a full bucket is the same as no bucket, so the object need not
// keep it. Take arms the alarm (if it is not armed) for when the bucket will
// be full again; the alarm handler deletes the object's storage if it is, and
// otherwise re-arms for the new time. A key that stops calling thus leaves no
// data behind, at the cost of at most one alarm per bucket that drains.
package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// ClassName is the name Register gives the class.
const ClassName = "Limiter"

// Config is the bucket of every Limiter object. The zero value works.
type Config struct {
	// Burst is the bucket's size: the most tokens one take, or a burst of
	// takes, can have at once (default 10).
	Burst int
	// PerSecond is the refill rate in tokens per second (default 1).
	PerSecond float64
}

func (c Config) withDefaults() Config {
	if c.Burst == 0 {
		c.Burst = 10
	}
	if c.PerSecond == 0 {
		c.PerSecond = 1
	}
	return c
}

// Validate reports every bad field.
func (c Config) Validate() error {
	var errs []string
	if c.Burst < 0 {
		errs = append(errs, fmt.Sprintf("Burst %d is negative", c.Burst))
	}
	if !(c.PerSecond > 0) || math.IsInf(c.PerSecond, 0) || c.PerSecond > 1e9 {
		errs = append(errs, fmt.Sprintf("PerSecond %v is not in (0, 1e9] (one token a nanosecond)", c.PerSecond))
	}
	if len(errs) > 0 {
		return fmt.Errorf("ratelimit: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Register adds Limiter to reg.
func Register(reg *node.Registry, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	return node.RegisterClass(reg, ClassName, func(_ context.Context, st durable.State) (*Limiter, error) {
		return newLimiter(st, cfg), nil
	})
}

// TakeRequest asks for N tokens (0 means 1).
type TakeRequest struct {
	N int `json:"n,omitempty"`
}

// TakeReply says whether the tokens were taken, how many whole tokens are
// left, and, when refused, how many milliseconds until N tokens will be
// there (0 when allowed).
type TakeReply struct {
	Allowed      bool  `json:"allowed"`
	Remaining    int   `json:"remaining"`
	RetryAfterMS int64 `json:"retry_after_ms"`
}

// PeekReply is peek's reply: the whole tokens in the bucket now, and whether
// the object keeps any state (false once the alarm has cleared a full
// bucket).
type PeekReply struct {
	Remaining int  `json:"remaining"`
	Stored    bool `json:"stored"`
}

// Limiter's methods, shared by the class and its callers.
var (
	Take = durable.NewMethod[TakeRequest, TakeReply]("take")
	Peek = durable.NewMethod[struct{}, PeekReply]("peek")
)

// Limiter is one token bucket.
type Limiter struct {
	*durable.Router
	st durable.State
	// interval is the time to refill one token; burst the time to refill
	// the whole bucket.
	interval, burst time.Duration
}

func newLimiter(st durable.State, cfg Config) *Limiter {
	interval := time.Duration(float64(time.Second) / cfg.PerSecond)
	l := &Limiter{st: st, interval: interval, burst: time.Duration(cfg.Burst) * interval}
	l.Router = durable.Methods(
		durable.Handle(Take, l.take),
		durable.Handle(Peek, l.peek),
	)
	return l
}

const bucketKey = "bucket"

// bucket is the stored state.
type bucket struct {
	FullAt time.Time `json:"full_at"`
}

// fullAt returns when the bucket will be full, never before now (a full
// bucket stays full); stored reports whether the object keeps a bucket.
func (l *Limiter) fullAt(ctx context.Context, now time.Time) (full time.Time, stored bool, err error) {
	b, ok, err := l.st.Storage().Get(ctx, bucketKey)
	if err != nil || !ok {
		return now, false, err
	}
	var bk bucket
	if err := json.Unmarshal(b, &bk); err != nil {
		return time.Time{}, false, fmt.Errorf("ratelimit: stored bucket: %w", err)
	}
	if bk.FullAt.Before(now) {
		return now, true, nil
	}
	return bk.FullAt, true, nil
}

// remaining is the whole tokens in a bucket full at full.
func (l *Limiter) remaining(now, full time.Time) int {
	return int((l.burst - full.Sub(now)) / l.interval)
}

func (l *Limiter) take(ctx context.Context, req TakeRequest) (TakeReply, error) {
	n := req.N
	if n == 0 {
		n = 1
	}
	if n < 0 || time.Duration(n)*l.interval > l.burst {
		// Never satisfiable: the caller's mistake, not a reason to wait.
		return TakeReply{}, fmt.Errorf("ratelimit: n = %d, want 1 to %d (the bucket's size)", n, l.burst/l.interval)
	}
	now := l.st.Clock().Now()
	full, _, err := l.fullAt(ctx, now)
	if err != nil {
		return TakeReply{}, err
	}
	next := full.Add(time.Duration(n) * l.interval)
	if over := next.Sub(now) - l.burst; over > 0 {
		// A refusal writes nothing.
		return TakeReply{
			Remaining:    l.remaining(now, full),
			RetryAfterMS: int64((over + time.Millisecond - 1) / time.Millisecond),
		}, nil
	}
	s := l.st.Storage()
	enc, err := json.Marshal(bucket{FullAt: next.UTC()})
	if err != nil {
		return TakeReply{}, err
	}
	if err := s.Put(ctx, bucketKey, enc); err != nil {
		return TakeReply{}, err
	}
	// Arm the cleanup once; the handler moves it later while takes go on.
	if _, armed, err := s.GetAlarm(ctx); err != nil {
		return TakeReply{}, err
	} else if !armed {
		if err := s.SetAlarm(ctx, next); err != nil {
			return TakeReply{}, err
		}
	}
	return TakeReply{Allowed: true, Remaining: l.remaining(now, next)}, nil
}

func (l *Limiter) peek(ctx context.Context, _ struct{}) (PeekReply, error) {
	now := l.st.Clock().Now()
	full, stored, err := l.fullAt(ctx, now)
	return PeekReply{Remaining: l.remaining(now, full), Stored: stored}, err
}

// Alarm deletes the bucket if it is full, or re-arms for when it will be.
func (l *Limiter) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	now := l.st.Clock().Now()
	full, stored, err := l.fullAt(ctx, now)
	if err != nil || !stored {
		return err
	}
	if !full.After(now) {
		return l.st.Storage().DeleteAll(ctx)
	}
	return l.st.Storage().SetAlarm(ctx, full)
}
