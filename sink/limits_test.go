package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyPathAndContentTypeMustBeUTF8(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)

	for _, tt := range []struct {
		name string
		req  func(*http.Request)
		want string
	}{
		{"key", func(r *http.Request) { r.Header.Set(IdempotencyKeyHeader, "k\x82") }, "Idempotency-Key is not valid UTF-8"},
		{"content type", func(r *http.Request) { r.Header.Set("Content-Type", "text/\xff") }, "Content-Type is not valid UTF-8"},
		{"path", func(r *http.Request) { r.URL.Path, r.URL.RawPath = "/p\x82", "/p%82" }, "path is not valid UTF-8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/p", strings.NewReader("{}"))
			require.NoError(t, err)
			tt.req(req)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer func() { assert.NoError(t, resp.Body.Close()) }()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", body)
			assert.Contains(t, string(body), tt.want)
		})
	}
	assert.Zero(t, s.Stats().Deliveries, "refused deliveries were recorded")
	_, err := s.Record("/p", "\xff", "", nil)
	assert.ErrorIs(t, err, ErrInvalid)
}

// TestKeysSurviveARestartExactly: duplicate detection after a restart from
// the file is what it was before, for any key the sink accepts.
func TestKeysSurviveARestartExactly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	keys := []string{"plain", "ключ ✓", "\u2028<&>", "\uFFFD", "tab\there", `"quoted"\`}
	first, err := New(Options{File: path, Logger: quiet})
	require.NoError(t, err)
	for _, k := range keys {
		_, err := first.Record("/p", k, "application/json; charset=ü", []byte(`{"a": 1}`))
		require.NoError(t, err)
	}
	before := first.Deliveries()
	require.NoError(t, first.Close())

	second := newSink(t, Options{File: path})
	after := second.Deliveries()
	require.Len(t, after, len(before))
	for i := range before {
		assert.True(t, before[i].ReceivedAt.Equal(after[i].ReceivedAt))
		after[i].ReceivedAt = before[i].ReceivedAt
	}
	assert.Equal(t, before, after, "replayed deliveries differ")
	for _, k := range keys {
		d, err := second.Record("/p", k, "", nil)
		require.NoError(t, err)
		assert.True(t, d.Duplicate, "key %q not recognised after the restart", k)
	}
	d, err := second.Record("/p", "\uFFFD\uFFFD", "", nil)
	require.NoError(t, err)
	assert.False(t, d.Duplicate)
}

func TestRetainedBodiesStayUnderTheCapAndMetadataStaysExact(t *testing.T) {
	t.Parallel()
	const limit, size, posts = 1000, 150, 40
	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	s := newSink(t, Options{File: path, MaxRetainedBytes: limit})
	srv := serve(t, s)

	body := func(i int) string { return fmt.Sprintf("%0*d", size, i) }
	for i := range posts {
		code, out := post{path: "/big", key: "k" + strconv.Itoa(i%10), body: body(i)}.do(t, srv)
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, postResponse{Seq: int64(i + 1), Duplicate: i >= 10}, out)
		assert.LessOrEqual(t, s.Stats().RetainedBytes, int64(limit), "after post %d", i)
	}
	st := s.Stats()
	assert.Equal(t, posts, st.Deliveries)
	assert.Equal(t, 10, st.UniqueKeys)
	assert.Equal(t, posts-10, st.Duplicates)
	assert.Positive(t, st.DroppedBodies)

	ds := getDeliveries(t, srv, "/deliveries")
	require.Len(t, ds, posts)
	var retained int64
	for i, d := range ds {
		assert.Equal(t, int64(i+1), d.Seq)
		assert.Equal(t, size, d.BodySize)
		assert.Equal(t, i >= 10, d.Duplicate)
		// The oldest bodies are the ones dropped.
		if i < st.DroppedBodies {
			assert.True(t, d.BodyDropped, "delivery %d", d.Seq)
			assert.Nil(t, d.Body)
			continue
		}
		assert.False(t, d.BodyDropped, "delivery %d", d.Seq)
		assert.Equal(t, body(i), string(d.Body))
		retained += int64(len(d.Body))
	}
	assert.Equal(t, st.RetainedBytes, retained)

	// The file keeps every body; a restarted sink holds the same cap.
	fromFile, err := ReadFile(path)
	require.NoError(t, err)
	for i, d := range fromFile {
		assert.Equal(t, body(i), string(d.Body))
	}
	require.NoError(t, s.Close())
	again := newSink(t, Options{File: path, MaxRetainedBytes: limit})
	st2 := again.Stats()
	assert.LessOrEqual(t, st2.RetainedBytes, int64(limit))
	assert.Equal(t, posts, st2.Deliveries)
	assert.Equal(t, posts-10, st2.Duplicates)
}

func TestSlowBodyIsCutOffByTheReadTimeout(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{ReadTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, wait, err := s.ListenAndServe(ctx, "127.0.0.1:0")
	require.NoError(t, err)
	defer func() {
		cancel()
		assert.NoError(t, wait())
	}()

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	// A bound for the test only: the server must end the request long
	// before it.
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
	_, err = io.WriteString(conn, "POST /slow HTTP/1.1\r\nHost: sink\r\nContent-Length: 100\r\n\r\nonly ten b")
	require.NoError(t, err)

	// The client never sends the rest: the server answers and hangs up.
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "the server did not end the request")
	assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	_, err = conn.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the connection stays open")
	assert.Zero(t, s.Stats().Deliveries, "a body cut off was recorded")
}

func TestServerHasTimeouts(t *testing.T) {
	t.Parallel()
	srv := newSink(t, Options{}).HTTPServer()
	assert.Equal(t, DefaultReadTimeout, srv.ReadTimeout)
	assert.Equal(t, DefaultWriteTimeout, srv.WriteTimeout)
	assert.Equal(t, DefaultIdleTimeout, srv.IdleTimeout)
	assert.Positive(t, srv.ReadHeaderTimeout)
	srv = newSink(t, Options{ReadTimeout: time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second}).HTTPServer()
	assert.Equal(t, time.Second, srv.ReadHeaderTimeout, "the header is part of the request")
	assert.Equal(t, 2*time.Second, srv.WriteTimeout)
	assert.Equal(t, 3*time.Second, srv.IdleTimeout)

	_, err := New(Options{MaxRetainedBytes: -1, IdleTimeout: -1})
	assert.ErrorContains(t, err, "MaxRetainedBytes")
	assert.ErrorContains(t, err, "IdleTimeout")
}

// getPage fetches one page and its Next-Since (0: none).
func getPage(t *testing.T, url string) ([]Delivery, int64) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer func() { assert.NoError(t, resp.Body.Close()) }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ds []Delivery
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ds))
	next := int64(0)
	if h := resp.Header.Get(NextSinceHeader); h != "" {
		next, err = strconv.ParseInt(h, 10, 64)
		require.NoError(t, err)
	}
	return ds, next
}

func TestPaginationWalksEveryDeliveryOnce(t *testing.T) {
	t.Parallel()
	s := newSink(t, Options{})
	srv := serve(t, s)
	const total = 23
	for i := range total {
		_, err := s.Record("/p", "k"+strconv.Itoa(i%3), "", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}

	for _, tt := range []struct {
		query string
		want  []int64
	}{
		{"limit=4", seqRange(1, total)},
		{"limit=1", seqRange(1, total)},
		{"limit=23", seqRange(1, total)},
		{"limit=100000", seqRange(1, total)},
		{"limit=5&key=k1", []int64{2, 5, 8, 11, 14, 17, 20, 23}},
		{"limit=2&key=none", nil},
	} {
		t.Run(tt.query, func(t *testing.T) {
			var got []int64
			since, pages := int64(0), 0
			for {
				ds, next := getPage(t, srv.URL+"/deliveries?since="+strconv.FormatInt(since, 10)+"&"+tt.query)
				got = append(got, seqs(ds)...)
				pages++
				require.Less(t, pages, 2*total, "pagination does not end")
				if next == 0 {
					break
				}
				require.Greater(t, next, since, "a next page must move on")
				since = next
			}
			assert.Equal(t, tt.want, got)
		})
	}

	ds, next := getPage(t, srv.URL+"/deliveries")
	assert.Len(t, ds, total)
	assert.Zero(t, next, "one default page holds them all")
	all, err := Fetch(context.Background(), srv.Client(), srv.URL, 0)
	require.NoError(t, err)
	assert.Equal(t, seqRange(1, total), seqs(all))
	after, err := Fetch(context.Background(), srv.Client(), srv.URL, 20)
	require.NoError(t, err)
	assert.Equal(t, []int64{21, 22, 23}, seqs(after))

	for _, bad := range []string{"limit=0", "limit=-3", "limit=x"} {
		code, body := get(t, srv, "/deliveries?"+bad)
		assert.Equal(t, http.StatusBadRequest, code, bad)
		assert.Contains(t, string(body), "limit must be", bad)
	}
}

func TestPageStopsAtItsBodyBudget(t *testing.T) {
	t.Parallel()
	big := make([]byte, pageBodyBytes/2+1) // shared: two never fit a page
	ds := make([]Delivery, 5)
	for i := range ds {
		ds[i] = Delivery{Seq: int64(i + 1), Body: big}
	}
	ds[3].Body = nil // small ones join a page
	var got [][]int64
	for since := int64(0); ; {
		out, next := page(ds, since, 100, "", false)
		got = append(got, seqs(out))
		if next == 0 {
			break
		}
		since = next
	}
	assert.Equal(t, [][]int64{{1}, {2}, {3, 4}, {5}}, got)
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}
