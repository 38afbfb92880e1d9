package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/durable-run/durable"
)

// Counter is a register with "increment" (payload: optional delta, default 1),
// "get" and "set" (payload: the value). Replies are {"value":N}. The chaos
// suite checks its histories for linearizability.
type Counter struct {
	state durable.State
}

func newCounter(_ context.Context, st durable.State) (*Counter, error) {
	return &Counter{state: st}, nil
}

const counterKey = "value"

func parseInt(payload []byte, def int64) (int64, error) {
	if len(payload) == 0 {
		return def, nil
	}
	v, err := strconv.ParseInt(string(payload), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("payload %q is not an integer", payload)
	}
	return v, nil
}

func (c *Counter) value(ctx context.Context) (int64, error) {
	v, ok, err := c.state.Storage().Get(ctx, counterKey)
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

// Invoke handles increment, get and set.
func (c *Counter) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	var out int64
	switch method {
	case "get":
		v, err := c.value(ctx)
		if err != nil {
			return nil, err
		}
		out = v
	case "increment":
		delta, err := parseInt(payload, 1)
		if err != nil {
			return nil, err
		}
		v, err := c.value(ctx)
		if err != nil {
			return nil, err
		}
		out = v + delta
	case "set":
		v, err := parseInt(payload, 0)
		if err != nil {
			return nil, err
		}
		out = v
	default:
		return nil, fmt.Errorf("unknown method %q (want increment, get or set)", method)
	}
	if method != "get" {
		if err := c.state.Storage().Put(ctx, counterKey, []byte(strconv.FormatInt(out, 10))); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]int64{"value": out})
}
