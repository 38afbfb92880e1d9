package durable_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/durable-run/durable"
)

type greetReq struct {
	Name string `json:"name"`
}

type greetResp struct {
	Greeting string `json:"greeting"`
}

var (
	greet    = durable.NewMethod[greetReq, greetResp]("greet")
	upper    = durable.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue]("upper")
	fail     = durable.NewMethod[struct{}, struct{}]("fail")
	optional = durable.NewMethod[*int64, int64]("optional")
)

var errNo = errors.New("the object says no")

// router is a class's router as a factory builds it; ran counts the
// handler runs.
func router(ran *int) *durable.Router {
	return durable.Methods(
		durable.Handle(greet, func(_ context.Context, r greetReq) (greetResp, error) {
			*ran++
			return greetResp{Greeting: "hello " + r.Name}, nil
		}),
		durable.Handle(upper, func(_ context.Context, r *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			*ran++
			b := []byte(r.GetValue())
			for i, c := range b {
				if 'a' <= c && c <= 'z' {
					b[i] = c - 'a' + 'A'
				}
			}
			return wrapperspb.String(string(b)), nil
		}),
		durable.Handle(fail, func(context.Context, struct{}) (struct{}, error) {
			*ran++
			return struct{}{}, errNo
		}),
		durable.Handle(optional, func(_ context.Context, v *int64) (int64, error) {
			*ran++
			if v == nil {
				return -1, nil
			}
			return *v, nil
		}),
	)
}

func TestRouterRoutesAndDecodes(t *testing.T) {
	pb, err := proto.Marshal(wrapperspb.String("abc"))
	require.NoError(t, err)
	tests := []struct {
		name    string
		method  string
		payload []byte
		want    []byte
		wantErr error // errors.Is target; nil: success
		ran     int
	}{
		{"json request and reply", "greet", []byte(`{"name":"ada"}`), []byte(`{"greeting":"hello ada"}`), nil, 1},
		{"empty json payload is the zero request", "greet", nil, []byte(`{"greeting":"hello "}`), nil, 1},
		{"no payload is a nil pointer", "optional", nil, []byte(`-1`), nil, 1},
		{"a bare integer is json", "optional", []byte(`41`), []byte(`41`), nil, 1},
		{"protobuf request and reply", "upper", pb, mustProto(t, wrapperspb.String("ABC")), nil, 1},
		{"empty protobuf payload is an empty message", "upper", nil, []byte{}, nil, 1},
		{"unknown method", "nope", nil, nil, durable.ErrUnknownMethod, 0},
		{"bad json", "greet", []byte(`{"name":`), nil, durable.ErrBadPayload, 0},
		{"json of the wrong type", "optional", []byte(`"41"`), nil, durable.ErrBadPayload, 0},
		{"bad protobuf", "upper", []byte{0xff, 0xff}, nil, durable.ErrBadPayload, 0},
		{"handler error is returned as it is", "fail", nil, nil, errNo, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := 0
			got, err := router(&ran).Invoke(context.Background(), tt.method, tt.payload)
			require.Equal(t, tt.ran, ran, "handler runs")
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.Equal(t, string(tt.want), string(got))
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			require.Nil(t, got)
		})
	}
}

func mustProto(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestRouterErrorsAreTheCallersNotTheObjects: an unknown name and a bad
// payload are not handler errors, and a bad payload is an invalid argument
// (node/errors.go maps them to Unimplemented and InvalidArgument); a
// handler's error carries no runtime sentinel.
func TestRouterErrorsAreTheCallersNotTheObjects(t *testing.T) {
	ran := 0
	r := router(&ran)
	_, err := r.Invoke(context.Background(), "nope", nil)
	require.ErrorContains(t, err, `"nope"`)
	require.ErrorContains(t, err, "fail, greet, optional, upper", "the error lists the class's methods")
	require.NotErrorIs(t, err, durable.ErrInvalidArgument)

	_, err = r.Invoke(context.Background(), "greet", []byte("x"))
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	require.ErrorContains(t, err, `"greet"`)

	_, err = r.Invoke(context.Background(), "fail", nil)
	for _, sentinel := range []error{durable.ErrInvalidArgument, durable.ErrUnknownMethod, durable.ErrBadPayload} {
		require.NotErrorIs(t, err, sentinel)
	}
}

func TestRouterFallbackServesUntypedNames(t *testing.T) {
	ran := 0
	r := router(&ran).Fallback(func(_ context.Context, method string, payload []byte) ([]byte, error) {
		return append([]byte(method+":"), payload...), nil
	})
	got, err := r.Invoke(context.Background(), "raw", []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "raw:x", string(got))
	got, err = r.Invoke(context.Background(), "greet", []byte(`{"name":"bo"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"greeting":"hello bo"}`, string(got), "typed names still route")
}

func TestMethodsRefusesRepeatedOrEmptyNames(t *testing.T) {
	h := func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil }
	m := durable.NewMethod[struct{}, struct{}]("m")
	require.Panics(t, func() { durable.Methods(durable.Handle(m, h), durable.Handle(m, h)) })
	require.Panics(t, func() { durable.Methods(durable.Handle(durable.NewMethod[struct{}, struct{}](""), h)) })
	require.Panics(t, func() { durable.Methods(durable.Route{}) })
}

// TestMethodCodecsMatchOnBothSides: what a caller encodes with the
// declaration, the router decodes, and the reverse; a zero Method (declared
// without NewMethod) uses the default codecs.
func TestMethodCodecsMatchOnBothSides(t *testing.T) {
	req, err := upper.EncodeRequest(wrapperspb.String("q"))
	require.NoError(t, err)
	ran := 0
	out, err := router(&ran).Invoke(context.Background(), upper.Name(), req)
	require.NoError(t, err)
	got, err := upper.DecodeReply(out)
	require.NoError(t, err)
	require.Equal(t, "Q", got.GetValue())

	var zero durable.Method[greetReq, greetResp]
	b, err := zero.EncodeRequest(greetReq{Name: "z"})
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"z"}`, string(b))

	custom := greet.WithCodecs(nil, upperJSON{})
	out, err = durable.Methods(durable.Handle(custom, func(_ context.Context, r greetReq) (greetResp, error) {
		return greetResp{Greeting: r.Name}, nil
	})).Invoke(context.Background(), "greet", []byte(`{"name":"x"}`))
	require.NoError(t, err)
	require.Equal(t, "X", string(out), "WithCodecs replaces the reply codec only")
}

// upperJSON is a reply codec that writes the greeting in upper case.
type upperJSON struct{}

func (upperJSON) Marshal(v greetResp) ([]byte, error) {
	b := []byte(v.Greeting)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b, nil
}

func (upperJSON) Unmarshal(data []byte) (greetResp, error) {
	return greetResp{Greeting: string(data)}, nil
}

// routerObjects is a durable.Objects whose every object is router r.
type routerObjects struct {
	r    *durable.Router
	last string // "class/name" of the last call
}

func (o *routerObjects) Call(ctx context.Context, class, name, method string, payload []byte) ([]byte, error) {
	o.last = class + "/" + name
	return o.r.Invoke(ctx, method, payload)
}

func (o *routerObjects) CallID(ctx context.Context, class string, id durable.ID, method string, payload []byte) ([]byte, error) {
	return o.Call(ctx, class, id.String(), method, payload)
}

func TestCallObjectEncodesTheRequestAndDecodesTheReply(t *testing.T) {
	ran := 0
	objs := &routerObjects{r: router(&ran)}
	got, err := durable.CallObject(context.Background(), objs, "Greeter", "g", greet, greetReq{Name: "ann"})
	require.NoError(t, err)
	require.Equal(t, greetResp{Greeting: "hello ann"}, got)
	require.Equal(t, "Greeter/g", objs.last)

	s, err := durable.CallObject(context.Background(), objs, "Greeter", "g", upper, wrapperspb.String("abc"))
	require.NoError(t, err)
	require.Equal(t, "ABC", s.GetValue())

	_, err = durable.CallObject(context.Background(), objs, "Greeter", "g", fail, struct{}{})
	require.ErrorIs(t, err, errNo, "the callee's error is returned as it came")
}
