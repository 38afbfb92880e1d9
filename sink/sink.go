// Package sink is the upstream HTTP endpoint that example classes (Batcher,
// Reminder) POST their deliveries to. `durable dev`, the docker demo and the
// chaos checks run it to record every delivery and to verify afterwards
// that each one arrived, and how often.
//
// Job: a Sink records each POST as a Delivery and serves what it recorded:
//
//	POST /<any path>   record a delivery; 200 {"seq":N,"duplicate":bool}
//	GET  /deliveries   one page of the recorded deliveries as a JSON array,
//	                   oldest first: ?since=SEQ those after SEQ, ?key=K
//	                   those whose Idempotency-Key is K, ?limit=N at most N
//	                   (default DefaultPageLimit, at most MaxPageLimit; a
//	                   page also stops after pageBodyBytes of bodies). When
//	                   more may follow, the Next-Since header holds the
//	                   since of the next page; Fetch walks every page.
//	GET  /stats        {"deliveries":N,"unique_keys":N,"duplicates":N,
//	                   "dropped_bodies":N,"retained_bytes":N}
//	GET  /healthz      200 {"ok":true}
//
// A body over Options.MaxBodyBytes is refused with 413; a body not sent
// within Options.ReadTimeout with 408; a path, Idempotency-Key or
// Content-Type that is not valid UTF-8 with 400 (the file could not hold it
// exactly, so duplicate detection would change after a restart); any other
// method, or GET on another path, with 405. Nothing refused is recorded.
//
// Limits: the sink keeps at most Options.MaxRetainedBytes of bodies in
// memory. Past that it drops the oldest bodies (a dropped delivery keeps
// its Seq, key, Duplicate flag and BodySize, with BodyDropped set; the file,
// if any, still holds the body), so numbering and duplicate detection stay
// exact while memory stays bounded; /stats counts the dropped bodies. Serve
// bounds reading a request (Options.ReadTimeout), writing a response
// (Options.WriteTimeout) and idle keep-alive connections
// (Options.IdleTimeout), so a slow or idle client cannot hold a connection
// forever.
//
// Invariants:
//   - Deliveries are numbered 1, 2, 3, ... in the order they are recorded,
//     with no gap; Seq is also the position in Deliveries.
//   - A delivery is a Duplicate exactly when an earlier delivery carried
//     the same non-empty Idempotency-Key header.
//   - The bodies retained in memory total at most Options.MaxRetainedBytes;
//     those dropped are the oldest.
//   - A delivery is acknowledged (200) only after it is recorded, and, with
//     Options.File set, after its line is written to the file. A delivery
//     that could not be written is not recorded and gets 500, so a retry is
//     not wrongly marked duplicate.
//   - The file holds one JSON Delivery per line, in Seq order; ReadFile
//     reads it back, and New replays it, so numbering and duplicate
//     detection survive a restart of the sink.
//
// Concurrency: all methods of Sink are safe for concurrent use, and its
// handler serves any number of requests at once. Wait sleeps on a channel
// that each new delivery closes; it never polls. Recorded deliveries are
// never changed in place (dropping bodies replaces the slice with a copy),
// so readers take a clipped slice under the mutex and read it without.
package sink

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	// DefaultMaxBodyBytes is the default Options.MaxBodyBytes.
	DefaultMaxBodyBytes int64 = 4 << 20
	// DefaultMaxRetainedBytes is the default Options.MaxRetainedBytes:
	// sixteen bodies of the largest default size. The examples' and chaos
	// checks' deliveries are a few hundred bytes, so they keep all theirs.
	DefaultMaxRetainedBytes int64 = 64 << 20
	// DefaultReadTimeout, DefaultWriteTimeout and DefaultIdleTimeout are
	// the defaults of the Options of the same names: a 4 MiB body needs
	// 70 KB/s to arrive in a minute.
	DefaultReadTimeout  = time.Minute
	DefaultWriteTimeout = time.Minute
	DefaultIdleTimeout  = 2 * time.Minute

	// DefaultPageLimit and MaxPageLimit bound the deliveries of one GET
	// /deliveries: without ?limit, and whatever ?limit says.
	DefaultPageLimit = 1000
	MaxPageLimit     = 10000
	// NextSinceHeader, on a page of /deliveries that more may follow,
	// holds the since of the next page.
	NextSinceHeader = "Next-Since"

	// IdempotencyKeyHeader is the request header whose value is a
	// delivery's IdempotencyKey.
	IdempotencyKeyHeader = "Idempotency-Key"

	// readHeaderTimeout bounds reading a request's header in Serve.
	readHeaderTimeout = 10 * time.Second
	// shutdownTimeout bounds the graceful part of Serve's shutdown; open
	// connections are closed after it.
	shutdownTimeout = 5 * time.Second
)

// pageBodyBytes stops a page of /deliveries once its bodies reach it (a
// page has at least one delivery): a page of large bodies stays a few MiB.
const pageBodyBytes = 8 << 20

// ErrClosed is returned by Wait, and reported to senders as 503, once the
// sink is closed.
var ErrClosed = errors.New("sink: closed")

// ErrInvalid is returned by Record, and reported to senders as 400, for a
// delivery the sink's file could not hold exactly: a path, key or content
// type that is not valid UTF-8 (JSON would turn its bad bytes into U+FFFD,
// and a replayed key would no longer match the one sent again).
var ErrInvalid = errors.New("sink: invalid delivery")

// Options configures New.
type Options struct {
	// File, if set, is a JSON-lines file each delivery is appended to,
	// created if missing. The deliveries already in it are replayed first:
	// numbering continues after them and their keys count for Duplicate, so
	// a restarted sink carries on where it stopped. It is not fsynced.
	File string
	// Logger receives one Info record per delivery. Nil: slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes is the largest body accepted; larger ones get 413.
	// Zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxRetainedBytes bounds the bodies kept in memory; past it the oldest
	// are dropped (see the package doc). Zero: DefaultMaxRetainedBytes.
	MaxRetainedBytes int64
	// ReadTimeout bounds reading a whole request, body included, in Serve;
	// a body not sent in time gets 408 and is not recorded. Zero:
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its response in
	// Serve. Zero: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle for this long in
	// Serve. Zero: DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// withDefaults validates o and fills in its zero fields.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxBodyBytes", o.MaxBodyBytes},
		{"MaxRetainedBytes", o.MaxRetainedBytes},
		{"ReadTimeout", int64(o.ReadTimeout)},
		{"WriteTimeout", int64(o.WriteTimeout)},
		{"IdleTimeout", int64(o.IdleTimeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("sink: negative %s %d", f.name, f.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	fill := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&o.MaxBodyBytes, DefaultMaxBodyBytes)
	fill(&o.MaxRetainedBytes, DefaultMaxRetainedBytes)
	fill((*int64)(&o.ReadTimeout), int64(DefaultReadTimeout))
	fill((*int64)(&o.WriteTimeout), int64(DefaultWriteTimeout))
	fill((*int64)(&o.IdleTimeout), int64(DefaultIdleTimeout))
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Delivery is one recorded POST. Body shares memory with the sink: callers
// must not modify it.
//
// In JSON a Body that is compact JSON (as encoding/json writes it) is
// embedded as is; any other body is a string with "body_encoding" set to
// "text" (valid UTF-8) or "base64", so that every body reads back byte for
// byte. An empty or dropped body is left out; "body_size" gives the
// length of a non-empty one.
type Delivery struct {
	// Seq numbers deliveries from 1 in the order they were recorded.
	Seq int64
	// ReceivedAt is when the delivery was recorded, in UTC.
	ReceivedAt time.Time
	// Path is the request's URL path.
	Path string
	// IdempotencyKey is the request's Idempotency-Key header, or "".
	IdempotencyKey string
	// ContentType is the request's Content-Type header, or "".
	ContentType string
	// Body is the request body, byte for byte; nil if it was empty or
	// dropped.
	Body []byte
	// BodySize is the length of the request body, dropped or not.
	BodySize int
	// BodyDropped is set when the sink dropped Body to stay within
	// Options.MaxRetainedBytes.
	BodyDropped bool
	// Duplicate is set when an earlier delivery had the same non-empty
	// IdempotencyKey.
	Duplicate bool
}

// Body encodings in a Delivery's JSON; see Delivery.
const (
	encodingJSON   = ""
	encodingText   = "text"
	encodingBase64 = "base64"
)

// deliveryJSON is the JSON form of a Delivery.
type deliveryJSON struct {
	Seq            int64           `json:"seq"`
	ReceivedAt     time.Time       `json:"received_at"`
	Path           string          `json:"path"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	ContentType    string          `json:"content_type,omitempty"`
	Duplicate      bool            `json:"duplicate"`
	BodySize       int             `json:"body_size,omitempty"`
	BodyDropped    bool            `json:"body_dropped,omitempty"`
	BodyEncoding   string          `json:"body_encoding,omitempty"`
	Body           json.RawMessage `json:"body,omitempty"`
}

// MarshalJSON implements json.Marshaler; see Delivery for the form.
func (d Delivery) MarshalJSON() ([]byte, error) {
	j := deliveryJSON{
		Seq:            d.Seq,
		ReceivedAt:     d.ReceivedAt,
		Path:           d.Path,
		IdempotencyKey: d.IdempotencyKey,
		ContentType:    d.ContentType,
		Duplicate:      d.Duplicate,
		BodySize:       d.BodySize,
		BodyDropped:    d.BodyDropped,
	}
	var err error
	switch {
	case len(d.Body) == 0:
	case embeddable(d.Body):
		j.Body = d.Body
	case utf8.Valid(d.Body):
		j.BodyEncoding = encodingText
		j.Body, err = json.Marshal(string(d.Body))
	default:
		j.BodyEncoding = encodingBase64
		j.Body, err = json.Marshal(base64.StdEncoding.EncodeToString(d.Body))
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(j)
}

// embeddable reports whether b, embedded in a JSON document, is written out
// unchanged: valid, compact, valid UTF-8, and free of what encoding/json
// escapes (<, >, &, U+2028, U+2029).
func embeddable(b []byte) bool {
	if !utf8.Valid(b) || bytes.ContainsAny(b, "<>&\u2028\u2029") {
		return false
	}
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b)
}

// UnmarshalJSON implements json.Unmarshaler, reversing MarshalJSON.
func (d *Delivery) UnmarshalJSON(data []byte) error {
	var j deliveryJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	var body []byte
	switch j.BodyEncoding {
	case encodingJSON:
		if len(j.Body) > 0 {
			body = slices.Clone(j.Body)
		}
	case encodingText, encodingBase64:
		var s string
		if err := json.Unmarshal(j.Body, &s); err != nil {
			return fmt.Errorf("sink: %s body: %w", j.BodyEncoding, err)
		}
		body = []byte(s)
		if j.BodyEncoding == encodingBase64 {
			var err error
			if body, err = base64.StdEncoding.DecodeString(s); err != nil {
				return fmt.Errorf("sink: base64 body: %w", err)
			}
		}
	default:
		return fmt.Errorf("sink: unknown body_encoding %q", j.BodyEncoding)
	}
	size := j.BodySize
	if !j.BodyDropped {
		size = len(body)
	}
	*d = Delivery{
		Seq:            j.Seq,
		ReceivedAt:     j.ReceivedAt,
		Path:           j.Path,
		IdempotencyKey: j.IdempotencyKey,
		ContentType:    j.ContentType,
		Body:           body,
		BodySize:       size,
		BodyDropped:    j.BodyDropped,
		Duplicate:      j.Duplicate,
	}
	return nil
}

// Stats counts what a sink recorded.
type Stats struct {
	// Deliveries is the number of deliveries recorded.
	Deliveries int `json:"deliveries"`
	// UniqueKeys is the number of distinct non-empty idempotency keys.
	UniqueKeys int `json:"unique_keys"`
	// Duplicates is the number of deliveries marked Duplicate.
	Duplicates int `json:"duplicates"`
	// DroppedBodies is the number of bodies dropped to stay within
	// Options.MaxRetainedBytes.
	DroppedBodies int `json:"dropped_bodies"`
	// RetainedBytes is the total size of the bodies kept in memory.
	RetainedBytes int64 `json:"retained_bytes"`
}

// Sink records deliveries. Create it with New.
type Sink struct {
	log  *slog.Logger
	opts Options

	mu sync.Mutex
	// deliveries[i] has Seq i+1. Entries are never changed in place (see
	// dropBodiesLocked), so a clipped prefix may be read without mu.
	deliveries []Delivery
	keys       map[string]struct{}
	duplicates int
	// retained is the size of the bodies in deliveries; dropped counts the
	// bodies dropped; deliveries before kept have had theirs dropped (or
	// had none).
	retained int64
	dropped  int
	kept     int
	// changed is closed, and replaced, on each new delivery and on Close.
	changed chan struct{}
	closed  bool
	file    logFile
	// fileSize is the length of the file's complete lines.
	fileSize int64
	// fileErr, once set, fails every delivery: a write failed and the
	// file could not be cut back to its complete lines.
	fileErr error
}

// logFile is the part of *os.File the sink writes with.
type logFile interface {
	Write(p []byte) (int, error)
	Truncate(size int64) error
	Close() error
}

// New returns a Sink configured by opts, opening opts.File if set.
func New(opts Options) (*Sink, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Sink{
		log:     opts.Logger,
		opts:    opts,
		keys:    make(map[string]struct{}),
		changed: make(chan struct{}),
	}
	if opts.File != "" {
		if err := s.openFile(opts.File); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// openFile opens the sink's file and replays the deliveries in it. A last
// line without its newline is a write cut short before it was
// acknowledged; it is cut off the file.
func (s *Sink) openFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("sink: open file: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("sink: read file: %w", err)
	}
	ds, n, err := parseLog(path, data)
	if err != nil {
		_ = f.Close()
		return err
	}
	if n < len(data) {
		s.log.Warn("sink file ends in an unfinished line, cutting it off",
			slog.String("file", path), slog.Int("bytes", len(data)-n))
		if err := f.Truncate(int64(n)); err != nil {
			_ = f.Close()
			return fmt.Errorf("sink: cut unfinished line: %w", err)
		}
	}
	for _, d := range ds {
		_, seen := s.keys[d.IdempotencyKey]
		d.Duplicate = d.IdempotencyKey != "" && seen
		s.appendLocked(d)
	}
	s.file = f
	s.fileSize = int64(n)
	if len(ds) > 0 {
		s.log.Info("sink file replayed", slog.String("file", path), slog.Int("deliveries", len(ds)))
	}
	return nil
}

// Close closes the file, refuses further deliveries with 503 and ends
// pending Waits with ErrClosed. Recorded deliveries stay readable. Only the
// first call does the work.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.changed)
	if s.file != nil {
		if err := s.file.Close(); err != nil {
			return fmt.Errorf("sink: close file: %w", err)
		}
	}
	return nil
}

// Record records a delivery as if it had been POSTed, and returns it. The
// sink keeps body: the caller must not modify it afterwards. Record fails
// with ErrClosed after Close, or if the delivery cannot be written to the
// file; a delivery that fails is not recorded.
func (s *Sink) Record(path, idempotencyKey, contentType string, body []byte) (Delivery, error) {
	d, err := s.record(path, idempotencyKey, contentType, body)
	if err != nil {
		return Delivery{}, err
	}
	s.log.Info("sink delivery recorded",
		slog.Int64("seq", d.Seq),
		slog.String("path", d.Path),
		slog.String("key", d.IdempotencyKey),
		slog.Int("bytes", len(d.Body)),
		slog.Bool("duplicate", d.Duplicate),
		slog.String("body", excerpt(d.Body)))
	return d, nil
}

// record numbers, stores and writes out one delivery under mu.
func (s *Sink) record(path, key, contentType string, body []byte) (Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Delivery{}, ErrClosed
	}
	for _, f := range []struct{ name, v string }{
		{"path", path}, {IdempotencyKeyHeader, key}, {"Content-Type", contentType},
	} {
		if !utf8.ValidString(f.v) {
			return Delivery{}, fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, f.name)
		}
	}
	if len(body) == 0 {
		body = nil
	}
	_, seen := s.keys[key]
	d := Delivery{
		Seq:            int64(len(s.deliveries)) + 1,
		ReceivedAt:     time.Now().UTC(),
		Path:           path,
		IdempotencyKey: key,
		ContentType:    contentType,
		Body:           body,
		BodySize:       len(body),
		Duplicate:      key != "" && seen,
	}
	if s.file != nil {
		if err := s.writeLine(d); err != nil {
			return Delivery{}, err
		}
	}
	d = s.appendLocked(d)
	close(s.changed)
	s.changed = make(chan struct{})
	return d, nil
}

// appendLocked adds d, numbered and marked, to the recorded deliveries,
// drops the oldest bodies if the retained ones exceed the cap, and returns
// d as recorded (its own body may be the one dropped).
func (s *Sink) appendLocked(d Delivery) Delivery {
	s.deliveries = append(s.deliveries, d)
	s.retained += int64(len(d.Body))
	if d.IdempotencyKey != "" {
		s.keys[d.IdempotencyKey] = struct{}{}
	}
	if d.Duplicate {
		s.duplicates++
	}
	if s.retained > s.opts.MaxRetainedBytes {
		s.dropBodiesLocked()
	}
	return s.deliveries[len(s.deliveries)-1]
}

// dropBodiesLocked drops the oldest bodies until those retained fill at
// most three quarters of the cap: the slack makes the copy below happen
// once per quarter of the cap received, not on every delivery. Readers may
// hold a snapshot of the slice, so the bodies are dropped in a copy.
func (s *Sink) dropBodiesLocked() {
	low := s.opts.MaxRetainedBytes - s.opts.MaxRetainedBytes/4
	ds := slices.Clone(s.deliveries)
	for ; s.kept < len(ds) && s.retained > low; s.kept++ {
		d := &ds[s.kept]
		if d.Body == nil {
			continue
		}
		s.retained -= int64(len(d.Body))
		d.Body, d.BodyDropped = nil, true
		s.dropped++
	}
	s.deliveries = ds
}

// writeLine appends d's line to the file under mu. If the write fails, the
// file is cut back to its complete lines so that the next line starts on
// its own; if even that fails, the sink takes no more deliveries.
func (s *Sink) writeLine(d Delivery) error {
	if s.fileErr != nil {
		return s.fileErr
	}
	line, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("sink: encode delivery: %w", err)
	}
	n, err := s.file.Write(append(line, '\n'))
	if err == nil {
		s.fileSize += int64(n)
		return nil
	}
	err = fmt.Errorf("sink: write file: %w", err)
	if terr := s.file.Truncate(s.fileSize); terr != nil {
		s.fileErr = errors.Join(err, fmt.Errorf("sink: cut back file: %w", terr))
		return s.fileErr
	}
	return err
}

// snapshot returns the recorded deliveries without copying them, the
// channel the next change closes, and whether the sink is closed.
func (s *Sink) snapshot() ([]Delivery, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clip(s.deliveries), s.changed, s.closed
}

// Deliveries returns a copy of the recorded deliveries, oldest first.
func (s *Sink) Deliveries() []Delivery {
	ds, _, _ := s.snapshot()
	return slices.Clone(ds)
}

// Stats returns the counts of what was recorded.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Deliveries:    len(s.deliveries),
		UniqueKeys:    len(s.keys),
		Duplicates:    s.duplicates,
		DroppedBodies: s.dropped,
		RetainedBytes: s.retained,
	}
}

// Wait blocks until pred holds over the recorded deliveries, oldest first,
// and returns nil. It returns ctx's error if ctx ends first, and ErrClosed
// if the sink is closed while pred does not hold. pred runs at the start
// and again whenever deliveries were added since its last run (it may see
// several new ones at once), on Wait's goroutine; it must not modify or
// keep the slice.
func (s *Sink) Wait(ctx context.Context, pred func([]Delivery) bool) error {
	for {
		ds, changed, closed := s.snapshot()
		if pred(ds) {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Handler returns the HTTP handler of the sink; see the package doc for the
// routes.
func (s *Sink) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

// queryPaths are the paths that also answer GET.
var queryPaths = map[string]bool{"/deliveries": true, "/stats": true, "/healthz": true}

func (s *Sink) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		s.handlePost(w, r)
		return
	case http.MethodGet, http.MethodHead:
		switch r.URL.Path {
		case "/deliveries":
			s.handleDeliveries(w, r)
			return
		case "/stats":
			writeJSON(w, http.StatusOK, s.Stats())
			return
		case "/healthz":
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
			return
		}
	}
	allow := http.MethodPost
	if queryPaths[r.URL.Path] {
		allow = "GET, HEAD, POST"
	}
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}

// postResponse is the body of a successful POST.
type postResponse struct {
	Seq       int64 `json:"seq"`
	Duplicate bool  `json:"duplicate"`
}

func (s *Sink) handlePost(w http.ResponseWriter, r *http.Request) {
	maxBody := s.opts.MaxBodyBytes
	if r.ContentLength > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "body exceeds "+strconv.FormatInt(maxBody, 10)+" bytes")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, "body exceeds "+strconv.FormatInt(maxBody, 10)+" bytes")
			return
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			writeError(w, http.StatusRequestTimeout, "body not received within "+s.opts.ReadTimeout.String())
			return
		}
		writeError(w, http.StatusBadRequest, "reading body failed")
		return
	}
	d, err := s.Record(r.URL.Path, r.Header.Get(IdempotencyKeyHeader), r.Header.Get("Content-Type"), body)
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "sink: "))
		return
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "sink is closed")
		return
	case err != nil:
		s.log.Error("sink delivery not recorded", slog.String("path", r.URL.Path), slog.Any("error", err))
		writeError(w, http.StatusInternalServerError, "recording delivery failed")
		return
	}
	writeJSON(w, http.StatusOK, postResponse{Seq: d.Seq, Duplicate: d.Duplicate})
}

func (s *Sink) handleDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "since must be a sequence number >= 0")
			return
		}
		since = n
	}
	limit := DefaultPageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "limit must be a number >= 1")
			return
		}
		limit = min(n, MaxPageLimit)
	}
	ds, _, _ := s.snapshot()
	out, next := page(ds, since, limit, q.Get("key"), q.Has("key"))
	if next > 0 {
		w.Header().Set(NextSinceHeader, strconv.FormatInt(next, 10))
	}
	writeJSON(w, http.StatusOK, out)
}

// page returns the deliveries of ds after since (whose Idempotency-Key is
// key, if byKey), at most limit and, past the first, no more than
// pageBodyBytes of bodies; and the since of the next page, 0 if none
// follows.
func page(ds []Delivery, since int64, limit int, key string, byKey bool) ([]Delivery, int64) {
	// ds[i] has Seq i+1, so those after since start at index since.
	out := []Delivery{}
	size := 0
	for _, d := range ds[min(since, int64(len(ds))):] {
		if byKey && d.IdempotencyKey != key {
			continue
		}
		if len(out) == limit || len(out) > 0 && size+len(d.Body) > pageBodyBytes {
			return out, out[len(out)-1].Seq
		}
		out = append(out, d)
		size += len(d.Body)
	}
	return out, 0
}

// writeJSON writes v as the JSON body of a response with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		http.Error(w, "encoding response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// writeError writes {"error": msg} with status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// Serve serves the sink's handler on ln until ctx ends, then shuts down
// gracefully: it stops accepting, lets running requests finish for up to
// five seconds, then closes what is left. It closes ln and returns nil
// after a stop by ctx, or the error that ended serving otherwise.
func (s *Sink) Serve(ctx context.Context, ln net.Listener) error {
	srv := s.HTTPServer()
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("sink serving", slog.String("addr", addr))

	select {
	case err := <-served:
		s.log.Error("sink serving failed", slog.String("addr", addr), slog.Any("error", err))
		return fmt.Errorf("sink: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("sink graceful shutdown incomplete", slog.String("addr", addr), slog.Any("error", err))
		_ = srv.Close()
	}
	<-served // http.ErrServerClosed after Shutdown or Close.
	s.log.Info("sink stopped", slog.String("addr", addr))
	return nil
}

// HTTPServer returns an http.Server with the sink's handler and the
// timeouts of its Options, for a caller that runs the server itself; Serve
// uses one.
func (s *Sink) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: min(readHeaderTimeout, s.opts.ReadTimeout),
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ListenAndServe listens on addr ("127.0.0.1:0" picks a free port) and
// serves the sink in the background until ctx ends; see Serve. It returns
// the bound address, such as "127.0.0.1:40123", and wait, which blocks until
// serving has stopped and returns Serve's result. It fails only if addr
// cannot be bound.
func (s *Sink) ListenAndServe(ctx context.Context, addr string) (bound string, wait func() error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("sink: listen: %w", err)
	}
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = s.Serve(ctx, ln)
	}()
	wait = func() error {
		<-done
		return serveErr
	}
	return ln.Addr().String(), wait, nil
}

// ReadFile reads the deliveries of a file written by a Sink with
// Options.File, in Seq order. Blank lines are skipped, and so is a last
// line without its newline: that write was cut short and never
// acknowledged. Any other line that is not the next Delivery is an error
// naming it.
func ReadFile(path string) ([]Delivery, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	ds, _, err := parseLog(path, data)
	return ds, err
}

// parseLog parses the lines of a sink file named name. It returns the
// deliveries of the newline-terminated lines and the length of data those
// lines span. Line i (from 1, blank lines aside) must have Seq i.
func parseLog(name string, data []byte) ([]Delivery, int, error) {
	var ds []Delivery
	off := 0
	for lineNo := 1; ; lineNo++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return ds, off, nil
		}
		line := bytes.TrimSpace(data[off : off+i])
		off += i + 1
		if len(line) == 0 {
			continue
		}
		var d Delivery
		if err := json.Unmarshal(line, &d); err != nil {
			return nil, 0, fmt.Errorf("sink: %s:%d: %w", name, lineNo, err)
		}
		if want := int64(len(ds)) + 1; d.Seq != want {
			return nil, 0, fmt.Errorf("sink: %s:%d: seq %d, want %d", name, lineNo, d.Seq, want)
		}
		ds = append(ds, d)
	}
}

// excerptBytes bounds the body shown in a delivery's log line.
const excerptBytes = 160

// excerpt is the start of a body for a log line, so an operator can find a
// delivery by what it says: valid UTF-8 text up to excerptBytes (cut at a
// rune boundary, with "…" when cut), or "(N bytes of binary)".
func excerpt(b []byte) string {
	if !utf8.Valid(b) {
		return fmt.Sprintf("(%d bytes of binary)", len(b))
	}
	if len(b) <= excerptBytes {
		return string(b)
	}
	cut := excerptBytes
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "…"
}

// Fetch returns the deliveries a sink serving at baseURL (such as
// "http://127.0.0.1:4680") recorded after since, oldest first, walking
// the pages of GET /deliveries; c nil is http.DefaultClient.
func Fetch(ctx context.Context, c *http.Client, baseURL string, since int64) ([]Delivery, error) {
	if c == nil {
		c = http.DefaultClient
	}
	var all []Delivery
	for {
		url := baseURL + "/deliveries?since=" + strconv.FormatInt(since, 10) + "&limit=" + strconv.Itoa(MaxPageLimit)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("sink: fetch: %w", err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("sink: fetch: %w", err)
		}
		var ds []Delivery
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("sink: fetch %s: %s", url, resp.Status)
		} else if derr := json.NewDecoder(resp.Body).Decode(&ds); derr != nil {
			err = fmt.Errorf("sink: fetch %s: %w", url, derr)
		}
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, ds...)
		next, perr := strconv.ParseInt(resp.Header.Get(NextSinceHeader), 10, 64)
		if perr != nil || next <= since {
			return all, nil // the last page (a next page must move on)
		}
		since = next
	}
}
