package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
)

// TestFrontErrorStatusRetryAfterAndReason: each kind of error reaches an
// HTTP caller with its status from the one table, the reason and
// retryability of its ErrorDetail, and Retry-After when it says to wait.
func TestFrontErrorStatusRetryAfterAndReason(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		reason     string
		retryable  bool
		retryAfter string
	}{
		{fmt.Errorf("put: %w", durable.ErrStorageFull), http.StatusTooManyRequests, "STORAGE_FULL", false, "10"},
		{durable.ErrOverloaded, http.StatusTooManyRequests, "OVERLOADED", false, ""},
		{durable.ErrOwnershipLost, http.StatusServiceUnavailable, "OWNERSHIP_LOST", true, ""},
		{durable.ErrObjectReset, http.StatusConflict, "OBJECT_RESET", true, ""},
		{durable.ErrAlarmPending, http.StatusConflict, "ALARM_PENDING", false, ""},
		{durable.ErrCommitUnknown, http.StatusInternalServerError, "COMMIT_UNKNOWN", false, ""},
		{&durable.ObjectError{Message: "no"}, http.StatusUnprocessableEntity, "OBJECT_ERROR", false, ""},
		{durable.ErrUnknownMethod, http.StatusNotFound, "UNKNOWN_METHOD", false, ""},
		{fmt.Errorf("run: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, "DEADLINE", false, ""},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeFrontError(w, tc.err)
			assert.Equal(t, tc.status, w.Code)
			assert.Equal(t, tc.retryAfter, w.Header().Get("Retry-After"))
			var body frontError
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
			assert.Equal(t, tc.reason, body.Reason)
			assert.Equal(t, tc.retryable, body.Retryable)
			assert.NotEmpty(t, body.Error)
		})
	}
}
