package durable

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"
)

// Object is an instance of a user's class. Invoke handles one invocation; it is
// never called concurrently with any other event of the same object.
//
// An error returned by Invoke is the object's own error: the caller receives it
// as such (gRPC code Unknown, marked as an object error) and every write the
// invocation made is discarded — except what an earlier Storage.Sync of the
// invocation already made durable, which stands.
type Object interface {
	Invoke(ctx context.Context, method string, payload []byte) ([]byte, error)
}

// Alarmer is implemented by classes that handle alarms. Only such classes may
// call Storage.SetAlarm.
//
// Alarm runs at or after the scheduled time, at least once, never concurrently
// with another event of the object. On success the alarm is deleted together
// with the handler's writes unless the handler set a new alarm. On failure
// (error, panic or the 15-minute limit) the handler's storage writes are
// discarded and the alarm is retried with exponential backoff (2 s … 64 s plus
// up to 25 % jitter, at most 6 retries), unless the handler set or deleted the
// alarm before failing: then that change stands and there is no retry. Writes
// an earlier Storage.Sync of the run made durable stand: the retry sees them.
type Alarmer interface {
	Alarm(ctx context.Context, info AlarmInfo) error
}

// AlarmInfo describes the alarm run being delivered.
type AlarmInfo struct {
	// RetryCount is 0 on the first run and n on the n-th retry.
	RetryCount int
	// IsRetry reports RetryCount > 0.
	IsRetry bool
	// ScheduledTime is the time the alarm was set for (not the retry time).
	ScheduledTime time.Time
}

// Factory creates the in-memory instance of an object when it activates. It
// runs on the object's own goroutine before any event is delivered, so state
// restored here (typically inside State.BlockConcurrencyWhile) is seen by the
// first event.
type Factory func(ctx context.Context, state State) (Object, error)

// State is what the runtime gives an object instance.
type State interface {
	// ID is the object's ID.
	ID() ID
	// Name is the name the object was addressed by, or "" when it has only
	// ever been addressed by a unique ID.
	Name() string
	// Storage is the object's private transactional storage.
	Storage() Storage
	// BlockConcurrencyWhile runs fn before any further event is delivered. If
	// fn fails or runs longer than 30 s the object is reset: its instance is
	// thrown away and callers waiting for it receive an error.
	BlockConcurrencyWhile(ctx context.Context, fn func(ctx context.Context) error) error
	// Clock is the runtime's clock, which alarms are scheduled on: read the
	// time (and set timers) from it, so that tests that drive a fake clock
	// drive the object too.
	Clock() clockwork.Clock
	// Objects calls other objects through the cluster, from the object's
	// own events.
	Objects() Objects
}

// Objects calls other objects from an event of the calling object. A call
// goes through the cluster like a client's (to the callee's owner, wherever
// it is) and keeps the caller's deadline: pass the handler's ctx.
//
// Exactly once across retries. Each call gets a request id derived from the
// calling event — its own request id, or for an Alarm run the alarm's
// scheduled time — and the call's position in the event (1st call, 2nd, …).
// A retried event that makes the same calls in the same order therefore
// sends the same ids, and the callee applies each once and replays its
// reply. A retry that sends the same callee another method or payload at
// the same position gets ErrRequestIDReused. The callee's effects stand even if the caller's event
// fails afterwards or its commit fails: the caller's own writes are
// discarded, the callee's are not (there is no distributed transaction).
//
// Deadlock. An object runs one event at a time, so a call back to an object
// already on the call path (itself, or A → B → A) would wait for its own
// event: such a call fails at once with ErrCallCycle and runs nothing.
type Objects interface {
	// Call invokes method on the object of class addressed by name.
	Call(ctx context.Context, class, name, method string, payload []byte) ([]byte, error)
	// CallID invokes method on the object of class with the given ID.
	CallID(ctx context.Context, class string, id ID, method string, payload []byte) ([]byte, error)
}

// KV is one entry returned by Storage.List.
type KV struct {
	Key   string
	Value []byte
}

// ListOptions selects a range of keys for Storage.List. Keys are ordered by
// their bytes.
type ListOptions struct {
	// Start is the first key included. Mutually exclusive with StartAfter.
	Start string
	// StartAfter excludes keys up to and including it.
	StartAfter string
	// End excludes keys from End on. Empty means no upper bound.
	End string
	// Prefix restricts the result to keys with this prefix.
	Prefix string
	// Reverse returns keys in descending order.
	Reverse bool
	// Limit is the maximum number of entries; 0 means no limit. Negative is an
	// error.
	Limit int
}

// Storage is an object's private key-value storage. It may only be used from
// the object's own events (including its factory).
//
// Reads see every earlier write of the object, committed or not. Writes are
// buffered and committed atomically with the other writes of the same event.
type Storage interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	GetMany(ctx context.Context, keys []string) (map[string][]byte, error)
	Put(ctx context.Context, key string, value []byte) error
	PutMany(ctx context.Context, entries map[string][]byte) error
	// Delete reports whether the key existed.
	Delete(ctx context.Context, key string) (bool, error)
	// DeleteMany returns how many of the keys existed.
	DeleteMany(ctx context.Context, keys []string) (int, error)
	List(ctx context.Context, opts ListOptions) ([]KV, error)
	// DeleteAll deletes every key of the object and its alarm (as
	// Cloudflare's deleteAll does since 2026-02-24). Inside the Alarm
	// handler it deletes the alarm too: the run is then not retried if it
	// fails (delete-then-fail).
	DeleteAll(ctx context.Context) error
	// Transaction runs fn; if fn returns an error, every write fn made —
	// storage and alarm, nested transactions included — is rolled back and
	// the error is returned. It is all-or-nothing: Sync inside it is
	// refused with ErrSyncInTransaction.
	Transaction(ctx context.Context, fn func(tx Storage) error) error
	// Sync returns once every earlier write of the object is durable. What
	// it made durable stands even if the event fails afterwards (an event's
	// failure otherwise discards its writes); later writes of the event are
	// committed with the event, or discarded if it fails. Inside
	// Transaction it fails with ErrSyncInTransaction and writes nothing.
	Sync(ctx context.Context) error

	// GetAlarm reports the alarm's time. Inside the Alarm handler it reports
	// no alarm unless the handler has set a new one.
	GetAlarm(ctx context.Context) (time.Time, bool, error)
	// SetAlarm sets the object's single alarm, replacing any earlier time. A
	// time in the past fires as soon as possible; the zero time is an error.
	// Alarm times are kept in whole milliseconds, rounded up so that an
	// alarm never fires early: GetAlarm and AlarmInfo.ScheduledTime report
	// the rounded time (10.0004 s is kept, and fires, as 10.001 s).
	SetAlarm(ctx context.Context, t time.Time) error
	// DeleteAlarm removes the alarm, if any.
	DeleteAlarm(ctx context.Context) error
}

// Storage limits. Calls exceeding them fail with ErrInvalidArgument before
// anything is written.
const (
	// MaxNameBytes bounds an object's name.
	MaxNameBytes  = 2048
	MaxKeyBytes   = 2048
	MaxValueBytes = 128 * 1024
	MaxKeysPerOp  = 128
)
