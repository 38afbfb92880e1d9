package sink

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
)

// FuzzHandler sends the sink's handler one arbitrary request (method, path,
// query, Idempotency-Key, Content-Type, body) after three recorded
// deliveries. It never panics and answers with a status it documents and a
// JSON body; a POST is recorded exactly when it gets 200, as it was sent;
// and a sink restarted from its file holds the same deliveries, byte for
// byte, so duplicate detection is the same after a restart.
func FuzzHandler(f *testing.F) {
	f.Add("POST", "/batch", "", "k1", "application/json", []byte(`{"items":[1,2]}`))
	f.Add("POST", "/x", "", "k\x82", "", []byte("{}"))
	f.Add("POST", "/p\x82", "", "", "", []byte(nil))
	f.Add("POST", "/x", "", "a", "text/\xff", []byte("\xff\xfe"))
	f.Add("POST", "/x", "", "\uFFFD", "", []byte(` { "a" : "<&>" } `))
	f.Add("POST", "/x", "", "a", "", bytes.Repeat([]byte("x"), 65))
	f.Add("GET", "/deliveries", "since=1&limit=1", "", "", []byte(nil))
	f.Add("GET", "/deliveries", "since=-1", "", "", []byte(nil))
	f.Add("GET", "/deliveries", "limit=0&key=a", "", "", []byte(nil))
	f.Add("GET", "/deliveries", "since=99999999999999999999", "", "", []byte(nil))
	f.Add("GET", "/deliveries", "key=%82", "", "", []byte(nil))
	f.Add("HEAD", "/stats", "", "", "", []byte(nil))
	f.Add("GET", "/healthz", "", "", "", []byte(nil))
	f.Add("DELETE", "/deliveries", "", "", "", []byte(nil))
	f.Add("", "", "", "", "", []byte(nil))
	f.Add("G\x00T", "/\x00", "%zz", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, method, path, query, key, contentType string, body []byte) {
		file := filepath.Join(t.TempDir(), "deliveries.jsonl")
		s, err := New(Options{File: file, Logger: quiet, MaxBodyBytes: 64, MaxRetainedBytes: 128})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "a"} {
			if _, err := s.Record("/seed", k, "", []byte(`{"seed":1}`)); err != nil {
				t.Fatal(err)
			}
		}
		req := &http.Request{
			Method:        method,
			URL:           &url.URL{Path: path, RawQuery: query},
			Header:        http.Header{},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
			Proto:         "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
		if key != "" {
			req.Header.Set(IdempotencyKeyHeader, key)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)

		code := w.Code
		switch code {
		case http.StatusOK, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s %q ?%q: status %d: %s", method, path, query, code, w.Body)
		}
		if code == http.StatusMethodNotAllowed && w.Header().Get("Allow") == "" {
			t.Fatal("405 without Allow")
		}
		if w.Body.Len() > 0 && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("status %d with a body that is not JSON: %q", code, w.Body)
		}
		ds := s.Deliveries()
		recorded := len(ds) == 4
		if posted := method == http.MethodPost && code == http.StatusOK; posted != recorded {
			t.Fatalf("%s %q: status %d, %d deliveries", method, path, code, len(ds))
		}
		if recorded {
			d := ds[3]
			if d.Path != path || d.IdempotencyKey != key || d.ContentType != contentType ||
				!bytes.Equal(d.Body, body) || d.BodySize != len(body) || d.Duplicate != (key == "a" || key == "b") {
				t.Fatalf("recorded %+v for key %q, body %q", d, key, body)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		again, err := New(Options{File: file, Logger: quiet, MaxBodyBytes: 64, MaxRetainedBytes: 128})
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		defer func() { _ = again.Close() }()
		replayed := again.Deliveries()
		if len(replayed) != len(ds) {
			t.Fatalf("restart: %d deliveries, want %d", len(replayed), len(ds))
		}
		for i := range ds {
			a, b := ds[i], replayed[i]
			if !a.ReceivedAt.Equal(b.ReceivedAt) || a.Seq != b.Seq || a.Path != b.Path || a.IdempotencyKey != b.IdempotencyKey ||
				a.ContentType != b.ContentType || a.Duplicate != b.Duplicate || a.BodySize != b.BodySize ||
				a.BodyDropped != b.BodyDropped || !bytes.Equal(a.Body, b.Body) {
				t.Fatalf("restart changed delivery %d:\n%+v\n%+v", i+1, a, b)
			}
		}
	})
}

// FuzzDeliveryJSON: the decoder of the file's lines never panics; any body
// survives encoding byte for byte; and a line it decodes encodes to one that
// decodes the same.
func FuzzDeliveryJSON(f *testing.F) {
	f.Add([]byte(`{"seq":1,"received_at":"2026-01-02T03:04:05Z","path":"/p","duplicate":false,"body":{"a":1}}`), []byte(`{"a":1}`))
	f.Add([]byte(`{"seq":1,"body_encoding":"base64","body":"/wAB"}`), []byte("\xff\x00\x01"))
	f.Add([]byte(`{"seq":1,"body_encoding":"text","body":"x","body_size":99,"body_dropped":true}`), []byte(" { \"a\" : 1 } "))
	f.Add([]byte(`{"seq":1,"body":"\u2028"}`), []byte("{\"a\":\"\u2028\"}"))
	f.Add([]byte(`{"seq":1,"body_encoding":"rot13","body":"x"}`), []byte(`<&>`))
	f.Add([]byte(`{"path":"\ud800"}`), []byte(`"\ud800"`))
	f.Fuzz(func(t *testing.T, line, body []byte) {
		in := Delivery{Seq: 1, Path: "/p", Body: body, BodySize: len(body)}
		if len(body) == 0 {
			in.Body = nil
		}
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out Delivery
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if !bytes.Equal(out.Body, in.Body) || out.BodySize != in.BodySize {
			t.Fatalf("body %q came back as %q (%s)", body, out.Body, data)
		}

		var d Delivery
		if json.Unmarshal(line, &d) != nil {
			return
		}
		data, err = json.Marshal(d)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", d, err)
		}
		var d2 Delivery
		if err := json.Unmarshal(data, &d2); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if !d.ReceivedAt.Equal(d2.ReceivedAt) || d.Path != d2.Path || d.IdempotencyKey != d2.IdempotencyKey ||
			!bytes.Equal(d.Body, d2.Body) || d.BodySize != d2.BodySize || d.BodyDropped != d2.BodyDropped {
			t.Fatalf("decoded, encoded, decoded changed it:\n%+v\n%+v", d, d2)
		}
	})
}
