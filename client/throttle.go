package client

import (
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// throttle is client-side adaptive throttling, as the Google SRE book
// describes it ("Handling Overload"): over the last throttleWindow the
// client counts the calls it attempted and those the cluster accepted (did
// not refuse as overloaded), and refuses a new call itself, without
// sending it, with probability
//
//	max(0, (requests − k·accepts) / (requests + 1))
//
// So while the cluster accepts everything nothing is refused here, and
// under overload about k times what the cluster accepts still reaches it —
// enough to notice when it recovers — while the rest costs neither the
// network nor the nodes anything: a refusal at a node costs CPU the node
// needs for the calls it admits. (Hand-written: no maintained Go library
// of it is among the module proxy's, and it is a few lines.)
type throttle struct {
	k   float64
	now func() time.Time
	rnd func() float64

	mu      sync.Mutex
	buckets [throttleBuckets]struct {
		second            int64
		requests, accepts float64
	}
}

const (
	throttleK       = 2
	throttleBuckets = 10 // one per second: a 10 s window
	// throttledRetryAfter is the retry-after of a call refused here.
	throttledRetryAfter = 100 * time.Millisecond
)

func newThrottle() *throttle {
	return &throttle{k: throttleK, now: time.Now, rnd: rand.Float64}
}

func (t *throttle) bucket(sec int64) int {
	i := int(sec % throttleBuckets)
	if b := &t.buckets[i]; b.second != sec {
		b.second, b.requests, b.accepts = sec, 0, 0
	}
	return i
}

// allow reports whether to send a call now; a call refused here counts as
// a request at once, a sent one when its outcome is known (done), so calls
// in flight do not count as refused ones.
func (t *throttle) allow() bool {
	sec := t.now().Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	var req, acc float64
	for _, b := range t.buckets {
		if sec-b.second < throttleBuckets {
			req, acc = req+b.requests, acc+b.accepts
		}
	}
	p := (req - t.k*acc) / (req + 1)
	if p <= 0 || t.rnd() >= p {
		return true
	}
	t.buckets[t.bucket(sec)].requests++
	return false
}

// done counts a sent call whose outcome is known: accepted unless the
// cluster refused it as overloaded.
func (t *throttle) done(accepted bool) {
	sec := t.now().Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	b := &t.buckets[t.bucket(sec)]
	b.requests++
	if accepted {
		b.accepts++
	}
}

// overloaded reports whether err is a node refusing a call as overloaded;
// a busy object (OBJECT_BUSY) says nothing of the cluster's other objects.
func overloaded(err error) bool {
	return status.Code(err) == codes.ResourceExhausted && Detail(err).GetReason() == "OVERLOADED"
}

// RetryAfter reports whether err refused a call that did not run and may be
// sent again later — the node was overloaded, the object busy, or this
// client throttled it — and after how long the refusal asks to wait (zero
// if it did not say). A full etcd (STORAGE_FULL) is not among them: it
// waits for an operator.
func RetryAfter(err error) (time.Duration, bool) {
	if status.Code(err) != codes.ResourceExhausted {
		return 0, false
	}
	d := Detail(err)
	switch d.GetReason() {
	case "OVERLOADED", "OBJECT_BUSY":
		return time.Duration(d.GetRetryAfterMs()) * time.Millisecond, true
	}
	return 0, false
}

// errThrottled is the error of a call the client refused itself.
func errThrottled() error {
	st, err := status.New(codes.ResourceExhausted, "client: refused without sending: the cluster is refusing calls as overloaded").
		WithDetails(&durablev1.ErrorDetail{Reason: "OVERLOADED", RetryAfterMs: throttledRetryAfter.Milliseconds()})
	if err != nil {
		return status.Error(codes.ResourceExhausted, "client: throttled")
	}
	return st.Err()
}
