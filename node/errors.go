package node

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// errorRule maps one internal error to its gRPC code and detail.
type errorRule struct {
	target    error
	code      codes.Code
	reason    string
	retryable bool
}

// errorTable is the one place internal errors become gRPC statuses. The first
// matching rule wins; ObjectError is matched before it.
var errorTable = []errorRule{
	{durable.ErrSyncInTransaction, codes.InvalidArgument, "SYNC_IN_TRANSACTION", false},
	{durable.ErrRequestIDReused, codes.InvalidArgument, "REQUEST_ID_REUSED", false},
	{durable.ErrBadPayload, codes.InvalidArgument, "BAD_PAYLOAD", false},
	{durable.ErrCallCycle, codes.InvalidArgument, "CALL_CYCLE", false},
	{durable.ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT", false},
	{durable.ErrUnknownMethod, codes.Unimplemented, "UNKNOWN_METHOD", false},
	{durable.ErrUnknownClass, codes.NotFound, "UNKNOWN_CLASS", false},
	{durable.ErrNoAlarmHandler, codes.FailedPrecondition, "NO_ALARM_HANDLER", false},
	{durable.ErrAlarmPending, codes.FailedPrecondition, "ALARM_PENDING", false},
	{durable.ErrOverloaded, codes.ResourceExhausted, "OVERLOADED", false},
	{durable.ErrObjectBusy, codes.ResourceExhausted, "OBJECT_BUSY", false},
	{durable.ErrStorageFull, codes.ResourceExhausted, "STORAGE_FULL", false},
	{durable.ErrOwnershipLost, codes.Unavailable, "OWNERSHIP_LOST", true},
	{durable.ErrUnavailable, codes.Unavailable, "UNAVAILABLE", true},
	// The commit may have applied: retrying could apply it twice.
	{durable.ErrCommitUnknown, codes.Unknown, "COMMIT_UNKNOWN", false},
	// A reset before the commit: nothing of the call was applied.
	{durable.ErrObjectReset, codes.Aborted, "OBJECT_RESET", true},
	{durable.ErrNotInEvent, codes.FailedPrecondition, "NOT_IN_EVENT", false},
	{context.DeadlineExceeded, codes.DeadlineExceeded, "DEADLINE", false},
	{context.Canceled, codes.Canceled, "CANCELED", false},
}

// ToStatus converts an internal error into a gRPC status error with an
// ErrorDetail. ownerAddr, when known, is attached for redirects. A status
// received from another node (FromStatus) is relayed as it came.
func ToStatus(err error, ownerAddr string) error {
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return re.st.Err()
	}
	if _, ok := status.FromError(err); ok && !isInternal(err) {
		return err
	}
	code, detail := classify(err)
	// A proto string must be valid UTF-8, or the detail cannot be
	// marshalled and is lost; an address with bad bytes is no address.
	detail.OwnerAddress = strings.ToValidUTF8(ownerAddr, "\uFFFD")
	var ra *retryAfterError
	switch {
	case errors.As(err, &ra):
		detail.RetryAfterMs = ra.after.Milliseconds()
	case errors.Is(err, durable.ErrStorageFull):
		detail.RetryAfterMs = storageFullRetryAfter.Milliseconds()
	}
	msg := statusMessage(err)
	st, derr := status.New(code, msg).WithDetails(detail)
	if derr != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// classify finds err's code and detail in the table (an internal error).
func classify(err error) (codes.Code, *durablev1.ErrorDetail) {
	var oe *durable.ObjectError
	if errors.As(err, &oe) {
		return codes.Unknown, &durablev1.ErrorDetail{ObjectError: true, Reason: "OBJECT_ERROR"}
	}
	for _, r := range errorTable {
		if errors.Is(err, r.target) {
			return r.code, &durablev1.ErrorDetail{Reason: r.reason, Retryable: r.retryable}
		}
	}
	return codes.Internal, &durablev1.ErrorDetail{Reason: "INTERNAL"}
}

// Code is the gRPC code err reaches a caller with (OK for nil), as ToStatus
// gives it, without building the status.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var re *remoteError
	if errors.As(err, &re) {
		return re.st.Code()
	}
	if st, ok := status.FromError(err); ok && !isInternal(err) {
		return st.Code()
	}
	code, _ := classify(err)
	return code
}

// maxMessageBytes caps a status message: errors may quote user input
// (keys, names, a handler's own message).
const maxMessageBytes = 1024

// statusMessage is err's text as a status can carry it: valid UTF-8 (a
// status with invalid UTF-8 cannot be marshalled, and its detail would be
// lost) and at most maxMessageBytes.
func statusMessage(err error) string {
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) <= maxMessageBytes {
		return msg
	}
	cut := maxMessageBytes
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// storageFullRetryAfter is the wait a caller is told when etcd is full: an
// operator has to act before any write can succeed.
const storageFullRetryAfter = 10 * time.Second

// retryAfterError says when the caller should try again.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// withRetryAfter attaches a retry-after to err (carried in ErrorDetail).
func withRetryAfter(err error, after time.Duration) error {
	return &retryAfterError{err: err, after: after}
}

// remoteError is an error status received from another node: it relays
// the status unchanged and unwraps to the sentinel its reason names, so
// callers test it with errors.Is like a local error.
type remoteError struct {
	st       *status.Status
	sentinel error // nil when the reason names none
}

func (e *remoteError) Error() string              { return e.st.Message() }
func (e *remoteError) GRPCStatus() *status.Status { return e.st }
func (e *remoteError) Unwrap() error              { return e.sentinel }

// FromStatus turns an error from a gRPC call to another node into an
// error that errors.Is matches against the sentinel of its reason (the
// inverse of the table). A bare Unavailable — the peer could not be
// reached — is ErrUnavailable; a bare DeadlineExceeded or Canceled is the
// context's error. Other errors are returned as they are.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	re := &remoteError{st: st}
	for _, d := range st.Details() {
		if ed, ok := d.(*durablev1.ErrorDetail); ok {
			if ed.GetObjectError() {
				return re
			}
			for _, r := range errorTable {
				if r.reason == ed.GetReason() {
					re.sentinel = r.target
					return re
				}
			}
			return re
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		re.sentinel = durable.ErrUnavailable
	case codes.DeadlineExceeded:
		// The caller's own deadline, ended on the way: gRPC's status has
		// no detail, but the caller (an object calling another) must
		// still tell it with errors.Is.
		re.sentinel = context.DeadlineExceeded
	case codes.Canceled:
		re.sentinel = context.Canceled
	}
	return re
}

// isInternal reports whether err is one of ours rather than an already
// converted status (e.g. one relayed from another node).
func isInternal(err error) bool {
	var oe *durable.ObjectError
	if errors.As(err, &oe) {
		return true
	}
	for _, r := range errorTable {
		if errors.Is(err, r.target) {
			return true
		}
	}
	return false
}
