package examples

import (
	"context"
	"strconv"

	"github.com/durable-run/durable"
)

// Counter is a register with typed methods (durable.Method): "increment"
// (payload: an optional JSON integer delta, default 1), "get" and "set"
// (payload: the value, default 0). Replies are {"value":N}. The chaos suite
// checks its histories for linearizability.
//
// The payloads are the JSON the untyped Counter took (a bare integer such as
// 41), so `durable invoke Counter c increment 41` is unchanged; an unknown
// method is now ErrUnknownMethod (Unimplemented) and a payload that is not an
// integer ErrBadPayload (InvalidArgument), not the object's own error.
type Counter struct {
	*durable.Router
	state durable.State
}

// CounterValue is the reply of every Counter method.
type CounterValue struct {
	Value int64 `json:"value"`
}

// Counter's methods. A nil request (no payload) means the default: a delta of
// 1 for increment, 0 for set.
var (
	CounterIncrement = durable.NewMethod[*int64, CounterValue]("increment")
	CounterGet       = durable.NewMethod[struct{}, CounterValue]("get")
	CounterSet       = durable.NewMethod[*int64, CounterValue]("set")
)

func newCounter(_ context.Context, st durable.State) (*Counter, error) {
	c := &Counter{state: st}
	c.Router = durable.Methods(
		durable.Handle(CounterIncrement, c.increment),
		durable.Handle(CounterGet, c.get),
		durable.Handle(CounterSet, c.set),
	)
	return c, nil
}

const counterKey = "value"

func (c *Counter) value(ctx context.Context) (int64, error) {
	v, ok, err := c.state.Storage().Get(ctx, counterKey)
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func (c *Counter) put(ctx context.Context, v int64) (CounterValue, error) {
	if err := c.state.Storage().Put(ctx, counterKey, []byte(strconv.FormatInt(v, 10))); err != nil {
		return CounterValue{}, err
	}
	return CounterValue{Value: v}, nil
}

func (c *Counter) increment(ctx context.Context, delta *int64) (CounterValue, error) {
	d := int64(1)
	if delta != nil {
		d = *delta
	}
	v, err := c.value(ctx)
	if err != nil {
		return CounterValue{}, err
	}
	return c.put(ctx, v+d)
}

func (c *Counter) get(ctx context.Context, _ struct{}) (CounterValue, error) {
	v, err := c.value(ctx)
	return CounterValue{Value: v}, err
}

func (c *Counter) set(ctx context.Context, v *int64) (CounterValue, error) {
	var n int64
	if v != nil {
		n = *v
	}
	return c.put(ctx, n)
}
