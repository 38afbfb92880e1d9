package examples

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// upstream records deliveries; fail makes it answer 500.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []delivery
	fail bool
}

type delivery struct {
	path, key string
	body      []byte
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.fail {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		u.got = append(u.got, delivery{path: r.URL.Path, key: r.Header.Get("Idempotency-Key"), body: body})
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) deliveries() []delivery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]delivery(nil), u.got...)
}

func (u *upstream) setFail(v bool) {
	u.mu.Lock()
	u.fail = v
	u.mu.Unlock()
}

func start(t *testing.T, u *upstream) *nodetest.Harness {
	clock := nodetest.NewClock()
	return nodetest.StartOne(t, nodetest.Options{
		Etcd:  sharedEtcd,
		Clock: clock,
		Config: func(cfg *node.Config) {
			cfg.Jitter = func() float64 { return 0 }
		},
		Register: func(reg *node.Registry) error {
			return Register(reg, Config{Upstream: u.srv.URL})
		},
	})
}

// settle waits until whatever the clock's time made due has run, its
// deliveries included. Node.Quiet alone is not enough here: it counts a
// handler that runs user code as waiting (it may wait on the fake clock),
// and these classes' handlers make real HTTP requests; none waits on the
// clock, so every alarm handed out must be done.
func settle(t *testing.T, h *nodetest.Harness) {
	t.Helper()
	h.WaitQuiet()
	h.WaitFor("alarm handlers done", func() bool { return h.Node().RunningAlarms() == 0 })
}

// advanceUntil advances the fake clock in steps until cond holds, settling
// after each step.
func advanceUntil(t *testing.T, h *nodetest.Harness, step time.Duration, limit time.Duration, cond func() bool) {
	t.Helper()
	for elapsed := time.Duration(0); ; elapsed += step {
		settle(t, h)
		if cond() {
			return
		}
		if elapsed >= limit {
			t.Fatalf("condition not reached within %s of fake time", limit)
		}
		h.Advance(step)
	}
}

func alarmOf(t *testing.T, h *nodetest.Harness, class, name string) (time.Time, bool) {
	t.Helper()
	id := durable.IDFromName(class, name)
	p := id.Partition(h.Node().PartitionCount())
	resp, err := h.Client.Get(context.Background(), h.Node().Keys().Alarm(p, class, id.String()))
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return time.Time{}, false
	}
	rec, err := alarmstore.Decode(p, class, id, resp.Kvs[0].Value)
	require.NoError(t, err)
	return rec.Due, true
}

func TestBatcherBatchesForTenSecondsThenDeliversOnce(t *testing.T) {
	u := newUpstream(t)
	h := start(t, u)
	t0 := h.Clock.Now()
	require.JSONEq(t, `{"queued":1}`, string(h.MustInvoke("Batcher", "foo", "add", []byte("hello"))))
	require.JSONEq(t, `{"queued":2}`, string(h.MustInvoke("Batcher", "foo", "add", []byte("world"))))
	due, ok := alarmOf(t, h, "Batcher", "foo")
	require.True(t, ok, "the first item sets an alarm")
	require.True(t, t0.Add(BatchDelay).Equal(due), "the second item must not move the alarm (due %s)", due)

	h.Advance(BatchDelay - time.Millisecond)
	settle(t, h)
	require.Empty(t, u.deliveries(), "delivered before the batch delay")

	advanceUntil(t, h, time.Millisecond, time.Second, func() bool { return len(u.deliveries()) == 1 })
	d := u.deliveries()[0]
	require.Equal(t, "/batches", d.path)
	id := durable.IDFromName("Batcher", "foo").String()
	require.Equal(t, id+"/0", d.key)
	var b Batch
	require.NoError(t, json.Unmarshal(d.body, &b))
	require.Equal(t, []string{"hello", "world"}, b.Items)
	require.Equal(t, "foo", b.Name)
	h.WaitFor("alarm deleted", func() bool { _, ok := alarmOf(t, h, "Batcher", "foo"); return !ok })

	// A new batch starts from 1 with the next sequence number.
	require.JSONEq(t, `{"queued":1}`, string(h.MustInvoke("Batcher", "foo", "add", []byte("again"))))
	advanceUntil(t, h, time.Second, 2*BatchDelay, func() bool { return len(u.deliveries()) == 2 })
	require.Equal(t, id+"/1", u.deliveries()[1].key)
	require.Len(t, u.deliveries(), 2, "each batch is delivered once")
}

func TestBatcherRestoresCountAfterRestart(t *testing.T) {
	u := newUpstream(t)
	h := start(t, u)
	h.MustInvoke("Batcher", "bar", "add", []byte("a"))
	h.MustInvoke("Batcher", "bar", "add", []byte("b"))
	h.Restart()
	require.JSONEq(t, `{"queued":3}`, string(h.MustInvoke("Batcher", "bar", "add", []byte("c"))))
	advanceUntil(t, h, time.Second, 2*BatchDelay, func() bool { return len(u.deliveries()) == 1 })
	var b Batch
	require.NoError(t, json.Unmarshal(u.deliveries()[0].body, &b))
	require.Equal(t, []string{"a", "b", "c"}, b.Items)
}

func TestBatcherRetriesWhenUpstreamFails(t *testing.T) {
	u := newUpstream(t)
	u.setFail(true)
	h := start(t, u)
	h.MustInvoke("Batcher", "retry", "add", []byte("x"))
	t0 := h.Clock.Now()
	h.Advance(BatchDelay)
	// The failed run re-arms the alarm 2 s later (jitter 0 in this test).
	h.WaitFor("retry scheduled", func() bool {
		due, ok := alarmOf(t, h, "Batcher", "retry")
		return ok && due.Equal(t0.Add(BatchDelay+2*time.Second))
	})
	u.setFail(false)
	advanceUntil(t, h, 500*time.Millisecond, 10*time.Second, func() bool { return len(u.deliveries()) == 1 })
	var b Batch
	require.NoError(t, json.Unmarshal(u.deliveries()[0].body, &b))
	require.Equal(t, []string{"x"}, b.Items, "the failed attempt kept the batch")
}

func TestCounter(t *testing.T) {
	h := start(t, newUpstream(t))
	require.JSONEq(t, `{"value":1}`, string(h.MustInvoke("Counter", "c", "increment", nil)))
	require.JSONEq(t, `{"value":6}`, string(h.MustInvoke("Counter", "c", "increment", []byte("5"))))
	require.JSONEq(t, `{"value":6}`, string(h.MustInvoke("Counter", "c", "get", nil)))
	require.JSONEq(t, `{"value":-2}`, string(h.MustInvoke("Counter", "c", "set", []byte("-2"))))
	require.JSONEq(t, `{"value":0}`, string(h.MustInvoke("Counter", "other", "get", nil)))
	// The README's lines, byte for byte.
	require.Equal(t, `{"value":1}`, string(h.MustInvoke("Counter", "readme", "increment", nil)))
	require.Equal(t, `{"value":42}`, string(h.MustInvoke("Counter", "readme", "increment", []byte("41"))))
	// Typed methods: a payload that is not an integer and an unknown method
	// are the caller's errors, refused before the handler runs — not the
	// object's own.
	var oe *durable.ObjectError
	_, err := h.Invoke("Counter", "c", "increment", []byte("x"))
	require.ErrorIs(t, err, durable.ErrBadPayload)
	require.Equal(t, codes.InvalidArgument, node.Code(err))
	require.False(t, errors.As(err, &oe), "a bad payload is not the object's error: %v", err)
	_, err = h.Invoke("Counter", "c", "nope", nil)
	require.ErrorIs(t, err, durable.ErrUnknownMethod)
	require.Equal(t, codes.Unimplemented, node.Code(err))
	require.False(t, errors.As(err, &oe), "an unknown method is not the object's error: %v", err)
	h.Restart()
	require.JSONEq(t, `{"value":-2}`, string(h.MustInvoke("Counter", "c", "get", nil)))
}

func TestReminderDeliversAtItsTime(t *testing.T) {
	u := newUpstream(t)
	h := start(t, u)
	at := h.Clock.Now().Add(90 * time.Second)
	h.MustInvoke("Reminder", "r1", "set", []byte(`{"message":"stand up","in":"90s"}`))
	var rec ReminderRecord
	require.NoError(t, json.Unmarshal(h.MustInvoke("Reminder", "r1", "get", nil), &rec))
	require.Equal(t, "stand up", rec.Message)
	require.True(t, rec.At.Equal(at))

	h.MustInvoke("Reminder", "r2", "set", []byte(fmt.Sprintf(`{"message":"never","at":%q}`, at.Format(time.RFC3339Nano))))
	require.JSONEq(t, `{"cancelled":true}`, string(h.MustInvoke("Reminder", "r2", "cancel", nil)))

	h.Advance(89 * time.Second)
	settle(t, h)
	require.Empty(t, u.deliveries())
	advanceUntil(t, h, time.Second, 5*time.Second, func() bool { return len(u.deliveries()) == 1 })
	var d Delivery
	require.NoError(t, json.Unmarshal(u.deliveries()[0].body, &d))
	require.Equal(t, "stand up", d.Message)
	require.Equal(t, "r1", d.Name)
	require.True(t, d.Scheduled.Equal(at))
	require.False(t, d.Fired.Before(at), "fired early")
	h.WaitFor("reminder deleted", func() bool { return string(h.MustInvoke("Reminder", "r1", "get", nil)) == "null" })
	settle(t, h)
	require.Len(t, u.deliveries(), 1, "the cancelled reminder was delivered")

	for _, bad := range []string{`nope`, `{"message":"m"}`, `{"message":"m","in":"soon"}`, `{"message":"m","in":"1s","at":"2030-01-01T00:00:00Z"}`} {
		_, err := h.Invoke("Reminder", "r3", "set", []byte(bad))
		var oe *durable.ObjectError
		require.True(t, errors.As(err, &oe), "set %s: want the object's error, got %v", bad, err)
	}
}

func TestCleanerDeletesOldEntriesAndRearms(t *testing.T) {
	h := start(t, newUpstream(t))
	now := h.Clock.Now()
	put := func(key string, ts time.Time) {
		h.MustInvoke("Cleaner", "c", "put", []byte(fmt.Sprintf(`{"key":%q,"value":"v","timestamp":%q}`, key, ts.Format(time.RFC3339Nano))))
	}
	for i := 0; i < 200; i++ { // more than one DeleteMany call's worth
		put(fmt.Sprintf("old-%03d", i), now.Add(-25*time.Hour))
	}
	put("fresh", now.Add(-time.Hour))
	due, ok := alarmOf(t, h, "Cleaner", "c")
	require.True(t, ok, "the factory arms the first cleanup")
	require.True(t, now.Add(CleanInterval).Equal(due), "first cleanup due %s", due)
	require.JSONEq(t, `{"entries":201}`, string(h.MustInvoke("Cleaner", "c", "count", nil)))

	h.Advance(CleanInterval)
	h.WaitFor("old entries deleted", func() bool {
		return string(h.MustInvoke("Cleaner", "c", "count", nil)) == `{"entries":1}`
	})
	h.WaitFor("re-armed", func() bool {
		due, ok := alarmOf(t, h, "Cleaner", "c")
		return ok && due.Equal(now.Add(2*CleanInterval))
	})
}
