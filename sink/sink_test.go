package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quiet is a logger that drops everything.
var quiet = slog.New(slog.DiscardHandler)

// newSink returns a sink with opts (and a quiet logger unless opts has
// one), closed at cleanup.
func newSink(t *testing.T, opts Options) *Sink {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// serve serves s on an httptest server closed at cleanup.
func serve(t *testing.T, s *Sink) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// post is one POST a test makes.
type post struct {
	path, key, contentType string
	body                   string
}

// do sends p to srv and returns the status and decoded reply.
func (p post) do(t *testing.T, srv *httptest.Server) (int, postResponse) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+p.path, strings.NewReader(p.body))
	require.NoError(t, err)
	if p.key != "" {
		req.Header.Set(IdempotencyKeyHeader, p.key)
	}
	if p.contentType != "" {
		req.Header.Set("Content-Type", p.contentType)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { assert.NoError(t, resp.Body.Close()) }()
	var out postResponse
	if resp.StatusCode == http.StatusOK {
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	}
	return resp.StatusCode, out
}

// get fetches path from srv and returns the status and body.
func get(t *testing.T, srv *httptest.Server, path string) (int, []byte) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	require.NoError(t, err)
	defer func() { assert.NoError(t, resp.Body.Close()) }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// getDeliveries fetches path and decodes the delivery array it returns.
func getDeliveries(t *testing.T, srv *httptest.Server, path string) []Delivery {
	t.Helper()
	code, body := get(t, srv, path)
	require.Equal(t, http.StatusOK, code, "GET %s: %s", path, body)
	var ds []Delivery
	require.NoError(t, json.Unmarshal(body, &ds))
	require.NotNil(t, ds, "GET %s returned null, want an array", path)
	return ds
}

// seqs returns the Seq of each delivery.
func seqs(ds []Delivery) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.Seq
	}
	return out
}

func TestPostRecordsDeliveries(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)

	posts := []post{
		{path: "/batch", key: "k1", contentType: "application/json", body: `{"items":[1,2,3]}`},
		{path: "/reminders/r-7", contentType: "text/plain", body: "remember"},
		{path: "/", body: ""},
		{path: "/deliveries", key: "k2", body: `"a POST to a query path records too"`},
	}
	before := time.Now().UTC()
	for i, p := range posts {
		code, out := p.do(t, srv)
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, postResponse{Seq: int64(i + 1)}, out)
	}

	ds := s.Deliveries()
	require.Len(t, ds, len(posts))
	for i, p := range posts {
		d := ds[i]
		assert.Equal(t, int64(i+1), d.Seq)
		assert.Equal(t, p.path, d.Path)
		assert.Equal(t, p.key, d.IdempotencyKey)
		assert.Equal(t, p.contentType, d.ContentType)
		assert.Equal(t, p.body, string(d.Body))
		assert.False(t, d.Duplicate)
		assert.False(t, d.ReceivedAt.Before(before), "ReceivedAt %v before the test", d.ReceivedAt)
		assert.Equal(t, time.UTC, d.ReceivedAt.Location())
	}
	retained := 0
	for _, p := range posts {
		retained += len(p.body)
	}
	assert.Equal(t, Stats{Deliveries: 4, UniqueKeys: 2, RetainedBytes: int64(retained)}, s.Stats())
}

func TestDuplicatesByKey(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)

	steps := []struct {
		key     string
		wantDup bool
	}{
		{"a", false},
		{"b", false},
		{"a", true},
		{"", false},
		{"", false},
		{"a", true},
		{"c", false},
		{"b", true},
	}
	for i, st := range steps {
		code, out := post{path: "/x", key: st.key, body: "{}"}.do(t, srv)
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, postResponse{Seq: int64(i + 1), Duplicate: st.wantDup}, out, "step %d", i)
	}
	want := Stats{Deliveries: 8, UniqueKeys: 3, Duplicates: 3, RetainedBytes: 8 * 2}
	assert.Equal(t, want, s.Stats())

	code, body := get(t, srv, "/stats")
	require.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"deliveries":8,"unique_keys":3,"duplicates":3,"dropped_bodies":0,"retained_bytes":16}`, string(body))
}

func TestDeliveriesQuery(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)
	for _, key := range []string{"a", "b", "a", "", "c", "a"} {
		code, _ := post{path: "/p", key: key, body: `{"n":1}`}.do(t, srv)
		require.Equal(t, http.StatusOK, code)
	}

	tests := []struct {
		query string
		want  []int64
	}{
		{"", []int64{1, 2, 3, 4, 5, 6}},
		{"?since=0", []int64{1, 2, 3, 4, 5, 6}},
		{"?since=2", []int64{3, 4, 5, 6}},
		{"?since=6", []int64{}},
		{"?since=100", []int64{}},
		{"?key=a", []int64{1, 3, 6}},
		{"?key=b", []int64{2}},
		{"?key=zzz", []int64{}},
		{"?key=", []int64{4}},
		{"?since=1&key=a", []int64{3, 6}},
		{"?since=5&key=b", []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			assert.Equal(t, tt.want, seqs(getDeliveries(t, srv, "/deliveries"+tt.query)))
		})
	}

	for _, bad := range []string{"?since=-1", "?since=x", "?since=1.5"} {
		code, body := get(t, srv, "/deliveries"+bad)
		assert.Equal(t, http.StatusBadRequest, code, bad)
		assert.Contains(t, string(body), `"error"`, bad)
	}
}

func TestDeliveriesJSONShape(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)
	code, _ := post{path: "/j", key: "k", contentType: "application/json", body: `{"a":[1,2]}`}.do(t, srv)
	require.Equal(t, http.StatusOK, code)
	code, _ = post{path: "/t", body: "plain <text> & more"}.do(t, srv)
	require.Equal(t, http.StatusOK, code)
	code, _ = post{path: "/b", body: "\xff\x00\x01"}.do(t, srv)
	require.Equal(t, http.StatusOK, code)
	code, _ = post{path: "/e"}.do(t, srv)
	require.Equal(t, http.StatusOK, code)

	_, body := get(t, srv, "/deliveries")
	var raw []map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Len(t, raw, 4)

	assert.Equal(t, map[string]any{"a": []any{1.0, 2.0}}, raw[0]["body"], "JSON body embedded as JSON")
	assert.NotContains(t, raw[0], "body_encoding")
	assert.Equal(t, "k", raw[0]["idempotency_key"])
	assert.Equal(t, "application/json", raw[0]["content_type"])
	assert.Equal(t, false, raw[0]["duplicate"])
	assert.Equal(t, 1.0, raw[0]["seq"])
	assert.Equal(t, "/j", raw[0]["path"])
	_, err := time.Parse(time.RFC3339Nano, raw[0]["received_at"].(string))
	assert.NoError(t, err)

	assert.Equal(t, "plain <text> & more", raw[1]["body"])
	assert.Equal(t, "text", raw[1]["body_encoding"])
	assert.NotContains(t, raw[1], "idempotency_key")
	assert.Equal(t, "/wAB", raw[2]["body"])
	assert.Equal(t, "base64", raw[2]["body_encoding"])
	assert.NotContains(t, raw[3], "body")
	assert.NotContains(t, raw[3], "body_encoding")
	assert.NotContains(t, raw[3], "body_size")
	assert.Equal(t, 11.0, raw[0]["body_size"])
}

func TestDeliveryJSONRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	bodies := map[string][]byte{
		"empty":          nil,
		"object":         []byte(`{"a":1,"b":[true,null]}`),
		"json string":    []byte(`"quoted"`),
		"json null":      []byte(`null`),
		"number":         []byte(`42`),
		"text":           []byte("hello, world"),
		"text with html": []byte(`<a href="x">&</a>`),
		"broken json":    []byte(`{"a":`),
		"binary":         {0xff, 0xfe, 0x00, 0x80},
		"utf8":           []byte("héllo ✓"),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			in := Delivery{Seq: 9, ReceivedAt: at, Path: "/p", IdempotencyKey: "k", ContentType: "c", Body: body, BodySize: len(body), Duplicate: true}
			data, err := json.Marshal(in)
			require.NoError(t, err)
			var out Delivery
			require.NoError(t, json.Unmarshal(data, &out), "%s", data)
			assert.Equal(t, in, out, "%s", data)
		})
	}

	// JSON that encoding/json would rewrite (spaces, escapes) is kept as
	// text, byte for byte; compact JSON is embedded.
	for body, enc := range map[string]string{
		` { "a" : 1 } `:      "text",
		`{"a":"<b>"}`:        "text",
		"{\"a\":\"\u2028\"}": "text",
		`{"a":"\u00e9"}`:     "",
		`{"a":1}`:            "",
	} {
		data, err := json.Marshal(Delivery{Body: []byte(body), BodySize: len(body)})
		require.NoError(t, err)
		var j deliveryJSON
		require.NoError(t, json.Unmarshal(data, &j))
		assert.Equal(t, enc, j.BodyEncoding, "%s", data)
		var out Delivery
		require.NoError(t, json.Unmarshal(data, &out))
		assert.Equal(t, body, string(out.Body))
	}
	var out Delivery

	for _, bad := range []string{
		`{"seq":1,"body_encoding":"rot13","body":"x"}`,
		`{"seq":1,"body_encoding":"base64","body":"!!"}`,
		`{"seq":1,"body_encoding":"text","body":5}`,
		`{"seq":"one"}`,
	} {
		assert.Error(t, json.Unmarshal([]byte(bad), &out), bad)
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{MaxBodyBytes: 10})
	srv := serve(t, s)

	tests := []struct {
		name    string
		body    string
		chunked bool
		want    int
	}{
		{name: "at limit", body: "0123456789", want: http.StatusOK},
		{name: "over limit", body: "0123456789a", want: http.StatusRequestEntityTooLarge},
		{name: "over limit without length", body: "0123456789a", chunked: true, want: http.StatusRequestEntityTooLarge},
		{name: "at limit without length", body: "abcdefghij", chunked: true, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				// Hiding the length makes the client send it chunked.
				r = io.MultiReader(r)
			}
			resp, err := srv.Client().Post(srv.URL+"/x", "text/plain", r)
			require.NoError(t, err)
			defer func() { assert.NoError(t, resp.Body.Close()) }()
			assert.Equal(t, tt.want, resp.StatusCode)
			if tt.want != http.StatusOK {
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				assert.Contains(t, string(body), "exceeds 10 bytes")
			}
		})
	}
	assert.Equal(t, 2, s.Stats().Deliveries, "refused bodies were recorded")

	def := newSink(t, Options{})
	assert.Equal(t, DefaultMaxBodyBytes, def.opts.MaxBodyBytes)
	_, err := New(Options{MaxBodyBytes: -1})
	assert.Error(t, err)
}

func TestMethodsAndPaths(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)

	tests := []struct {
		method, path string
		want         int
		wantAllow    string
		wantBody     string
	}{
		{method: http.MethodGet, path: "/healthz", want: http.StatusOK, wantBody: `{"ok":true}`},
		{method: http.MethodHead, path: "/healthz", want: http.StatusOK},
		{method: http.MethodGet, path: "/stats", want: http.StatusOK, wantBody: `{"deliveries":0,"unique_keys":0,"duplicates":0,"dropped_bodies":0,"retained_bytes":0}`},
		{method: http.MethodGet, path: "/deliveries", want: http.StatusOK, wantBody: `[]`},
		{method: http.MethodHead, path: "/deliveries", want: http.StatusOK},
		{method: http.MethodGet, path: "/other", want: http.StatusMethodNotAllowed, wantAllow: "POST"},
		{method: http.MethodGet, path: "/deliveries/", want: http.StatusMethodNotAllowed, wantAllow: "POST"},
		{method: http.MethodPut, path: "/x", want: http.StatusMethodNotAllowed, wantAllow: "POST"},
		{method: http.MethodDelete, path: "/stats", want: http.StatusMethodNotAllowed, wantAllow: "GET, HEAD, POST"},
		{method: http.MethodPatch, path: "/deliveries", want: http.StatusMethodNotAllowed, wantAllow: "GET, HEAD, POST"},
		{method: http.MethodOptions, path: "/", want: http.StatusMethodNotAllowed, wantAllow: "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			require.NoError(t, err)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer func() { assert.NoError(t, resp.Body.Close()) }()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tt.want, resp.StatusCode)
			assert.Equal(t, tt.wantAllow, resp.Header.Get("Allow"))
			if tt.wantBody != "" {
				assert.JSONEq(t, tt.wantBody, string(body))
			}
			if tt.want == http.StatusMethodNotAllowed {
				assert.JSONEq(t, `{"error":"method not allowed"}`, string(body))
			}
		})
	}
	assert.Zero(t, s.Stats().Deliveries, "a non-POST request was recorded")
}

func TestWait(t *testing.T) {
	t.Parallel()
	atLeast := func(n int) func([]Delivery) bool {
		return func(ds []Delivery) bool { return len(ds) >= n }
	}

	t.Run("wakes on deliveries", func(t *testing.T) {
		t.Parallel()
		s := newSink(t, Options{})
		srv := serve(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var calls int
		done := make(chan error, 1)
		go func() {
			done <- s.Wait(ctx, func(ds []Delivery) bool {
				calls++
				return len(ds) == 3 && string(ds[2].Body) == `"third"`
			})
		}()
		for _, b := range []string{`"first"`, `"second"`, `"third"`} {
			code, _ := post{path: "/w", body: b}.do(t, srv)
			require.Equal(t, http.StatusOK, code)
		}
		require.NoError(t, <-done)
		assert.LessOrEqual(t, calls, 4, "pred runs once at the start and once per delivery")
	})

	t.Run("already true", func(t *testing.T) {
		t.Parallel()
		s := newSink(t, Options{})
		_, err := s.Record("/r", "", "", nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.NoError(t, s.Wait(ctx, atLeast(1)), "a true predicate wins over a done context")
	})

	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		s := newSink(t, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, s.Wait(ctx, atLeast(1)), context.DeadlineExceeded)
	})

	t.Run("sink closes", func(t *testing.T) {
		t.Parallel()
		s, err := New(Options{Logger: quiet})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- s.Wait(context.Background(), atLeast(1)) }()
		require.NoError(t, s.Close())
		assert.ErrorIs(t, <-done, ErrClosed)
		assert.ErrorIs(t, s.Wait(context.Background(), atLeast(1)), ErrClosed)
		assert.NoError(t, s.Wait(context.Background(), atLeast(0)))
	})
}

func TestClosedSinkRefusesDeliveries(t *testing.T) {
	t.Parallel()
	s, err := New(Options{Logger: quiet})
	require.NoError(t, err)
	srv := serve(t, s)
	code, _ := post{path: "/before", body: "{}"}.do(t, srv)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "second Close")

	code, _ = post{path: "/after", body: "{}"}.do(t, srv)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	_, err = s.Record("/after", "", "", nil)
	assert.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, []int64{1}, seqs(getDeliveries(t, srv, "/deliveries")), "recorded deliveries stay readable")
}

func TestFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	s, err := New(Options{File: path, Logger: quiet})
	require.NoError(t, err)
	srv := serve(t, s)
	posts := []post{
		{path: "/a", key: "k1", contentType: "application/json", body: `{"n":1}`},
		{path: "/b", key: "k1", body: "not json"},
		{path: "/c", body: "\x00\xff"},
		{path: "/d"},
	}
	for _, p := range posts {
		code, _ := p.do(t, srv)
		require.Equal(t, http.StatusOK, code)
	}
	want := s.Deliveries()
	require.NoError(t, s.Close())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	require.Len(t, lines, len(posts))
	for i, line := range lines {
		var d Delivery
		require.NoError(t, json.Unmarshal([]byte(line), &d), line)
		assert.Equal(t, want[i], d)
	}
	assert.Contains(t, lines[0], `"body":{"n":1}`)
	assert.Contains(t, lines[1], `"duplicate":true`)

	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestFileReplayedOnRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	first, err := New(Options{File: path, Logger: quiet})
	require.NoError(t, err)
	for _, key := range []string{"a", "b", "a"} {
		_, err := first.Record("/p", key, "", []byte(`{}`))
		require.NoError(t, err)
	}
	require.NoError(t, first.Close())

	var logs bytes.Buffer
	second := newSink(t, Options{File: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	assert.Contains(t, logs.String(), "sink file replayed")
	assert.Equal(t, Stats{Deliveries: 3, UniqueKeys: 2, Duplicates: 1, RetainedBytes: 3 * 2}, second.Stats())
	d, err := second.Record("/p", "b", "", nil)
	require.NoError(t, err)
	assert.Equal(t, int64(4), d.Seq, "numbering continues")
	assert.True(t, d.Duplicate, "keys from before the restart count")
	d, err = second.Record("/p", "c", "", nil)
	require.NoError(t, err)
	assert.False(t, d.Duplicate)

	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2, 3, 4, 5}, seqs(got))
	assert.Equal(t, second.Deliveries(), got)
}

func TestFileUnfinishedLastLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	first, err := New(Options{File: path, Logger: quiet})
	require.NoError(t, err)
	_, err = first.Record("/p", "a", "", []byte(`{"ok":true}`))
	require.NoError(t, err)
	require.NoError(t, first.Close())

	// A crash cut the second write short.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"seq":2,"received_at":"2026-01-0`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []int64{1}, seqs(got), "ReadFile skips the unfinished line")

	var logs bytes.Buffer
	s := newSink(t, Options{File: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	assert.Contains(t, logs.String(), "sink file ends in an unfinished line")
	d, err := s.Record("/p", "b", "", nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), d.Seq)

	got, err = ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2}, seqs(got), "the unfinished line was cut off the file")
}

func TestFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	good := `{"seq":1,"received_at":"2026-01-02T03:04:05Z","path":"/p","duplicate":false}` + "\n"
	tests := []struct {
		name, content, errSub string
	}{
		{name: "garbage.jsonl", content: good + "not json\n", errSub: "garbage.jsonl:2"},
		{name: "gap.jsonl", content: strings.Replace(good, `"seq":1`, `"seq":2`, 1), errSub: "seq 2, want 1"},
		{name: "blank-ok.jsonl", content: "\n" + good + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(tt.name, tt.content)
			ds, err := ReadFile(p)
			s, newErr := New(Options{File: p, Logger: quiet})
			if tt.errSub == "" {
				require.NoError(t, err)
				require.NoError(t, newErr)
				assert.Len(t, ds, 1)
				assert.NoError(t, s.Close())
				return
			}
			assert.ErrorContains(t, err, tt.errSub)
			assert.ErrorContains(t, newErr, tt.errSub)
			assert.Nil(t, s)
		})
	}

	_, err := ReadFile(filepath.Join(dir, "missing.jsonl"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = New(Options{File: filepath.Join(dir, "no", "such", "dir", "f.jsonl"), Logger: quiet})
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestWriteFailureRecordsNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	s := newSink(t, Options{File: path})
	srv := serve(t, s)
	code, _ := post{path: "/ok", key: "k", body: "{}"}.do(t, srv)
	require.Equal(t, http.StatusOK, code)

	// Swap in a read-only handle: writes fail, and so does cutting the
	// file back, so the sink stops taking deliveries.
	ro, err := os.Open(path)
	require.NoError(t, err)
	s.mu.Lock()
	rw := s.file
	s.file = ro
	s.mu.Unlock()
	require.NoError(t, rw.Close())

	code, _ = post{path: "/p", key: "k2", body: "{}"}.do(t, srv)
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Equal(t, Stats{Deliveries: 1, UniqueKeys: 1, RetainedBytes: 2}, s.Stats(), "a delivery that was not written was recorded")
	_, err = s.Record("/p", "k2", "", nil)
	assert.ErrorContains(t, err, "cut back file")
	assert.Equal(t, Stats{Deliveries: 1, UniqueKeys: 1, RetainedBytes: 2}, s.Stats())

	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []int64{1}, seqs(got))
}

// shortWriter writes only half of its next write and fails it, once.
type shortWriter struct {
	*os.File
	fail bool
}

func (w *shortWriter) Write(p []byte) (int, error) {
	if !w.fail {
		return w.File.Write(p)
	}
	w.fail = false
	n, err := w.File.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	return n, errors.New("disk full")
}

func TestShortWriteIsCutBack(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	s := newSink(t, Options{File: path})
	_, err := s.Record("/p", "a", "", []byte(`{"n":1}`))
	require.NoError(t, err)

	s.mu.Lock()
	w := &shortWriter{File: s.file.(*os.File), fail: true}
	s.file = w
	s.mu.Unlock()

	_, err = s.Record("/p", "b", "", []byte(`{"n":2}`))
	assert.ErrorContains(t, err, "disk full")
	d, err := s.Record("/p", "b", "", []byte(`{"n":3}`))
	require.NoError(t, err)
	assert.Equal(t, int64(2), d.Seq)
	assert.False(t, d.Duplicate, "the failed delivery's key was kept")

	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, s.Deliveries(), got, "the half-written line was not cut back")
}

func TestLogsEachDelivery(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := newSink(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	_, err := s.Record("/batch", "key-1", "application/json", []byte(`{"a":1}`))
	require.NoError(t, err)
	_, err = s.Record("/batch", "key-1", "application/json", []byte(`{"a":1}`))
	require.NoError(t, err)

	var recs []map[string]any
	dec := json.NewDecoder(&logs)
	for dec.More() {
		var m map[string]any
		require.NoError(t, dec.Decode(&m))
		recs = append(recs, m)
	}
	require.Len(t, recs, 2)
	assert.Equal(t, "INFO", recs[0]["level"])
	assert.Equal(t, "sink delivery recorded", recs[0]["msg"])
	assert.Equal(t, "/batch", recs[0]["path"])
	assert.Equal(t, "key-1", recs[0]["key"])
	assert.Equal(t, 7.0, recs[0]["bytes"])
	assert.Equal(t, false, recs[0]["duplicate"])
	assert.Equal(t, true, recs[1]["duplicate"])
	assert.Equal(t, 2.0, recs[1]["seq"])
}

func TestConcurrentPosts(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	s := newSink(t, Options{File: path})
	srv := serve(t, s)

	const workers, perWorker, keys = 8, 25, 40
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- s.Wait(ctx, func(ds []Delivery) bool { return len(ds) == workers*perWorker })
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := fmt.Sprintf("key-%d", (w*perWorker+i)%keys)
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/c", strings.NewReader(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)))
				if !assert.NoError(t, err) {
					return
				}
				req.Header.Set(IdempotencyKeyHeader, key)
				resp, err := srv.Client().Do(req)
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.NoError(t, resp.Body.Close())
			}
		})
	}
	readers := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			select {
			case <-readers:
				return
			default:
			}
			st := s.Stats()
			assert.LessOrEqual(t, st.UniqueKeys, keys)
			_ = getDeliveries(t, srv, "/deliveries?key=key-1")
		}
	})
	wg.Wait()
	require.NoError(t, <-waitErr)
	close(readers)
	rg.Wait()

	const total = workers * perWorker
	st := s.Stats()
	assert.Equal(t, Stats{Deliveries: total, UniqueKeys: keys, Duplicates: total - keys, RetainedBytes: st.RetainedBytes}, st)
	ds := s.Deliveries()
	seen := map[string]bool{}
	for i, d := range ds {
		assert.Equal(t, int64(i+1), d.Seq)
		assert.Equal(t, seen[d.IdempotencyKey], d.Duplicate, "seq %d", d.Seq)
		seen[d.IdempotencyKey] = true
	}
	fromFile, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, ds, fromFile)
}

func TestListenAndServe(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s := newSink(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, wait, err := s.ListenAndServe(ctx, "127.0.0.1:0")
	require.NoError(t, err)
	require.NotEqual(t, "127.0.0.1:0", addr)

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+addr+"/hello", "application/json", strings.NewReader(`{"hi":1}`))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"seq":1,"duplicate":false}`, string(body))

	cancel()
	require.NoError(t, wait())
	require.NoError(t, wait(), "wait may be called again")
	_, err = client.Get("http://" + addr + "/healthz")
	assert.Error(t, err, "still serving after ctx ended")
	assert.Contains(t, logs.String(), "sink serving")
	assert.Contains(t, logs.String(), "sink stopped")

	_, _, err = s.ListenAndServe(context.Background(), "127.0.0.1:-1")
	assert.Error(t, err)
}

func TestServeWaitsForRunningRequests(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, wait, err := s.ListenAndServe(ctx, "127.0.0.1:0")
	require.NoError(t, err)

	// With "Expect: 100-continue" the client sends the body only once the
	// handler reads it, so a write into the body pipe returning means the
	// handler is running.
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	defer client.CloseIdleConnections()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/slow", pr)
	require.NoError(t, err)
	req.Header.Set("Expect", "100-continue")
	respc := make(chan *http.Response, 1)
	go func() {
		defer close(respc)
		resp, err := client.Do(req)
		if assert.NoError(t, err) {
			respc <- resp
		}
	}()
	_, err = pw.Write([]byte(`{"part":`))
	require.NoError(t, err)

	// Shutdown begins while the handler still reads the body: the
	// listener closes first.
	cancel()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return true
		}
		_ = c.Close()
		return false
	}, 10*time.Second, 5*time.Millisecond, "listener still open after ctx ended")
	_, err = pw.Write([]byte(`1}`))
	require.NoError(t, err)
	require.NoError(t, pw.Close())

	resp, ok := <-respc
	require.True(t, ok, "request failed")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, wait())
	require.Len(t, s.Deliveries(), 1)
	assert.Equal(t, `{"part":1}`, string(s.Deliveries()[0].Body))
}

func TestServeReportsListenerFailure(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	err := s.Serve(context.Background(), failingListener{})
	assert.ErrorContains(t, err, "sink: serve")
}

// failingListener fails every Accept.
type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept failed") }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
