package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/durable-run/durable"
)

// Greeter is an untyped class: it greets its caller by the object's name
// and counts the visits.
type Greeter struct{ st durable.State }

func newGreeter(_ context.Context, st durable.State) (*Greeter, error) {
	return &Greeter{st: st}, nil
}

func (g *Greeter) Invoke(ctx context.Context, method string, _ []byte) ([]byte, error) {
	if method != "hello" {
		return nil, fmt.Errorf("%w %q", durable.ErrUnknownMethod, method)
	}
	n, err := addStored(ctx, g.st.Storage(), "visits", 1)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "hello %s, visit %d", g.st.Name(), n), nil
}

// Tally is a typed class: a running total, its methods declared once and
// shared with its callers (client.Call, client.Bind).
type Tally struct {
	*durable.Router
	st durable.State
}

// AddRequest is add's request.
type AddRequest struct {
	N int64 `json:"n"`
}

// Total is the reply of add and get.
type Total struct {
	Total int64 `json:"total"`
}

// Tally's methods.
var (
	Add = durable.NewMethod[AddRequest, Total]("add")
	Get = durable.NewMethod[struct{}, Total]("get")
)

// ErrNotPositive is add's error for N < 1.
var ErrNotPositive = errors.New("usermod: add needs n > 0")

func newTally(_ context.Context, st durable.State) (*Tally, error) {
	t := &Tally{st: st}
	t.Router = durable.Methods(durable.Handle(Add, t.add), durable.Handle(Get, t.get))
	return t, nil
}

func (t *Tally) add(ctx context.Context, req AddRequest) (Total, error) {
	if req.N < 1 {
		return Total{}, ErrNotPositive
	}
	n, err := addStored(ctx, t.st.Storage(), "total", req.N)
	return Total{Total: n}, err
}

func (t *Tally) get(ctx context.Context, _ struct{}) (Total, error) {
	n, err := addStored(ctx, t.st.Storage(), "total", 0)
	return Total{Total: n}, err
}

// addStored adds d to the integer stored under key and returns the sum
// (d = 0 only reads it).
func addStored(ctx context.Context, s durable.Storage, key string, d int64) (int64, error) {
	v, _, err := s.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	var n int64
	if v != nil {
		if n, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("usermod: stored %s %q: %w", key, v, err)
		}
	}
	if d == 0 {
		return n, nil
	}
	n += d
	return n, s.Put(ctx, key, []byte(strconv.FormatInt(n, 10)))
}
