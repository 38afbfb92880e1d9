package durable

import (
	"errors"
	"fmt"
)

// Sentinel errors of the runtime. Wrap them with %w; test with errors.Is. The
// gRPC server maps each to one status code in a single table (node/errors.go).
var (
	// ErrInvalidArgument: bad input from the caller (malformed ID, key or
	// value over the limits, empty method, ...). Nothing was written.
	ErrInvalidArgument = errors.New("durable: invalid argument")
	// ErrUnknownClass: no class is registered under the name.
	ErrUnknownClass = errors.New("durable: unknown class")
	// ErrOverloaded: the node refuses calls for now (admission control: calls
	// in flight, activations per second, objects in memory). Nothing of the
	// call ran. Retry after the retry-after the error carries, not at once.
	ErrOverloaded = errors.New("durable: node overloaded")
	// ErrObjectBusy: the object's queue is full (--queue-size events wait
	// for it). Nothing of the call ran. Retry later; other objects are not
	// affected.
	ErrObjectBusy = errors.New("durable: object busy")
	// ErrUnavailable: the object cannot run here right now (ownership moving,
	// node draining or starting, etcd unreachable). Safe to retry.
	ErrUnavailable = errors.New("durable: unavailable")
	// ErrOwnershipLost: the node lost the partition while the event ran; its
	// writes were not committed. Safe to retry (elsewhere).
	ErrOwnershipLost = errors.New("durable: partition ownership lost")
	// ErrObjectReset: the object's instance was thrown away (a commit failed,
	// BlockConcurrencyWhile failed or timed out, a handler panicked) while
	// the call waited or ran. Nothing of the call was confirmed.
	ErrObjectReset = errors.New("durable: object reset")
	// ErrCommitUnknown: etcd did not say whether the commit applied (an
	// ambiguous error). The object was reset; the call must not be assumed
	// to have failed or succeeded.
	ErrCommitUnknown = errors.New("durable: commit outcome unknown")
	// ErrNoAlarmHandler: the class has no Alarm method, so it cannot set one.
	ErrNoAlarmHandler = errors.New("durable: class has no alarm handler")
	// ErrAlarmPending: an operation that sets an object's alarm from
	// outside (requeuing a dead letter) found one pending.
	ErrAlarmPending = errors.New("durable: the object has an alarm pending")
	// ErrNotInEvent: storage was used outside the object's own events.
	ErrNotInEvent = errors.New("durable: storage used outside an event of its object")
	// ErrStorageFull: etcd refused the write because its database is full
	// (NOSPACE); nothing was written. Reads keep working. Retry once an
	// operator has freed space (compact, defragment, raise the quota).
	ErrStorageFull = errors.New("durable: storage full")
	// ErrRequestIDReused: a request id already recorded for another call
	// (another method or payload) was sent again; nothing ran. It is an
	// ErrInvalidArgument.
	ErrRequestIDReused = fmt.Errorf("%w: request id reused with another call", ErrInvalidArgument)
	// ErrUnknownMethod: the class has no method of that name (a Router
	// without a fallback). Nothing ran. Not the object's own error: the
	// caller asked for something the class does not offer.
	ErrUnknownMethod = errors.New("durable: unknown method")
	// ErrBadPayload: a typed method's payload cannot be decoded into its
	// request type; the handler did not run and nothing was written. It is
	// an ErrInvalidArgument.
	ErrBadPayload = fmt.Errorf("%w: payload cannot be decoded", ErrInvalidArgument)
	// ErrCallCycle: an object called itself, directly or through other
	// objects (A → B → A), from one of its events. The call would wait for
	// the calling event, which waits for the call: nothing of it ran. It is
	// an ErrInvalidArgument.
	ErrCallCycle = fmt.Errorf("%w: call cycle (the object is already on the call path; the call would deadlock)", ErrInvalidArgument)
	// ErrSyncInTransaction: Storage.Sync was called inside
	// Storage.Transaction, which must stay all-or-nothing. Nothing was
	// written. It is an ErrInvalidArgument.
	ErrSyncInTransaction = fmt.Errorf("%w: Sync inside a Transaction (a transaction is all-or-nothing)", ErrInvalidArgument)
)

// ObjectError is an error returned (or a panic raised) by a user's handler. It
// is delivered to the caller as the object's own error, distinguishable from
// the runtime's errors.
type ObjectError struct {
	Message string
}

func (e *ObjectError) Error() string { return "object error: " + e.Message }

// Invalidf returns an ErrInvalidArgument wrapping a formatted message.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
