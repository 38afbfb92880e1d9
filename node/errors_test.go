package node_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/node"
)

// TestTypedMethodErrorsInTheTable: a typed method's refusals reach the
// caller with their own code and reason, are not the object's errors, and
// come back from another node (FromStatus) as the same sentinels.
func TestTypedMethodErrorsInTheTable(t *testing.T) {
	tests := []struct {
		err    error
		code   codes.Code
		reason string
		is     []error
	}{
		{fmt.Errorf("%w %q", durable.ErrUnknownMethod, "nope"), codes.Unimplemented, "UNKNOWN_METHOD", []error{durable.ErrUnknownMethod}},
		{fmt.Errorf("%w: method %q: bad json", durable.ErrBadPayload, "get"), codes.InvalidArgument, "BAD_PAYLOAD", []error{durable.ErrBadPayload, durable.ErrInvalidArgument}},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			st := node.ToStatus(tt.err, "")
			require.Equal(t, tt.code, node.Code(tt.err))
			require.Equal(t, tt.code, node.Code(st))
			d := client.Detail(st)
			require.NotNil(t, d)
			require.Equal(t, tt.reason, d.GetReason())
			require.False(t, d.GetObjectError())
			require.False(t, d.GetRetryable())
			back := node.FromStatus(st)
			for _, target := range tt.is {
				require.True(t, errors.Is(back, target), "FromStatus(%v) is %v", st, target)
			}
			require.Equal(t, st, node.ToStatus(back, ""), "relayed unchanged")
		})
	}
}
