package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/commit"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
)

// ---------------------------------------------------------------------------
// Test class "T": every invocation runs the closure the test registered under
// the invocation's method name, so a test can run arbitrary storage code
// inside an event of a real object on a real node.
//
// Closures run on the handler's goroutine: they may use assert (t.Errorf is
// goroutine-safe) but never require (FailNow must run on the test's
// goroutine). Results are handed back through captured variables, which the
// reply channel orders before the test reads them.
// ---------------------------------------------------------------------------

const tClass = "T"

// tObj is an instance of class T.
type tObj struct {
	s   *storeT
	st  durable.State
	mem int // in-memory counter; the factory restores it from key "mem"
}

func (o *tObj) S() durable.Storage { return o.st.Storage() }

func (o *tObj) Invoke(ctx context.Context, method string, _ []byte) ([]byte, error) {
	fn := o.s.lookup(method)
	if fn == nil {
		return nil, fmt.Errorf("no test function registered as %q", method)
	}
	return fn(ctx, o)
}

// Alarm makes T an alarm class so that SetAlarm is allowed; it runs the
// test's onAlarm, if set.
func (o *tObj) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	o.s.mu.Lock()
	fn := o.s.onAlarm
	o.s.mu.Unlock()
	if fn != nil {
		return fn(ctx, o)
	}
	return nil
}

type eventFn func(ctx context.Context, o *tObj) ([]byte, error)

// storeT is a node running class T, plus helpers that look at etcd directly.
type storeT struct {
	t *testing.T
	h *harness

	mu      sync.Mutex
	fns     map[string]eventFn
	seq     int
	onAlarm func(ctx context.Context, o *tObj) error

	factoryRuns atomic.Int64
}

func newStoreT(t *testing.T, setup func(cfg *node.Config)) *storeT {
	t.Helper()
	s := &storeT{t: t, fns: map[string]eventFn{}}
	s.h = newHarness(t, func(cfg *node.Config, reg *node.Registry) {
		if setup != nil {
			setup(cfg)
		}
		require.NoError(t, node.RegisterClass(reg, tClass, s.factory))
	})
	return s
}

// factory counts its runs and restores the in-memory counter from storage.
func (s *storeT) factory(ctx context.Context, st durable.State) (*tObj, error) {
	s.factoryRuns.Add(1)
	o := &tObj{s: s, st: st}
	err := st.BlockConcurrencyWhile(ctx, func(ctx context.Context) error {
		v, ok, err := st.Storage().Get(ctx, "mem")
		if err != nil || !ok {
			return err
		}
		o.mem, err = strconv.Atoi(string(v))
		return err
	})
	return o, err
}

func (s *storeT) lookup(method string) eventFn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fns[method]
}

func (s *storeT) register(fn eventFn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	m := "f" + strconv.Itoa(s.seq)
	s.fns[m] = fn
	return m
}

func (s *storeT) unregister(method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fns, method)
}

// invoke runs fn as one invocation of object name and returns the node's
// result. Safe to call from any goroutine.
func (s *storeT) invoke(name string, fn eventFn) (node.Result, error) {
	method := s.register(fn)
	defer s.unregister(method)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.h.n().Invoke(ctx, tClass, node.Ref{Name: name}, method, nil)
}

func (s *storeT) run(name string, fn eventFn) ([]byte, error) {
	res, err := s.invoke(name, fn)
	return res.Payload, err
}

func (s *storeT) mustRun(name string, fn eventFn) []byte {
	s.t.Helper()
	out, err := s.run(name, fn)
	require.NoError(s.t, err)
	return out
}

// do runs fn with the object's storage as one event.
func (s *storeT) do(name string, fn func(ctx context.Context, st durable.Storage) error) error {
	_, err := s.run(name, func(ctx context.Context, o *tObj) ([]byte, error) { return nil, fn(ctx, o.S()) })
	return err
}

func (s *storeT) mustDo(name string, fn func(ctx context.Context, st durable.Storage) error) {
	s.t.Helper()
	require.NoError(s.t, s.do(name, fn))
}

// put commits entries to object name in one event.
func (s *storeT) put(name string, kv map[string]string) {
	s.t.Helper()
	s.mustDo(name, func(ctx context.Context, st durable.Storage) error { return st.PutMany(ctx, bytesMap(kv)) })
}

// inc is an event that increments the in-memory counter, stores it and
// returns it: a stale instance would return a number storage never held.
func inc(ctx context.Context, o *tObj) ([]byte, error) {
	o.mem++
	v := strconv.Itoa(o.mem)
	return []byte(v), o.S().Put(ctx, "mem", []byte(v))
}

func (s *storeT) id(name string) durable.ID { return durable.IDFromName(tClass, name) }

func (s *storeT) part(name string) int { return s.id(name).Partition(s.h.n().PartitionCount()) }

func (s *storeT) dataPrefix(name string) string {
	return s.h.n().Keys().DataPrefix(s.part(name), tClass, s.id(name).String())
}

func (s *storeT) dataKey(name, key string) string { return s.dataPrefix(name) + key }

func (s *storeT) alarmKey(name string) string {
	return s.h.n().Keys().Alarm(s.part(name), tClass, s.id(name).String())
}

func etcdCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// etcdData reads object name's storage straight from etcd: user key → value.
func (s *storeT) etcdData(name string) map[string]string {
	s.t.Helper()
	ctx, cancel := etcdCtx()
	defer cancel()
	prefix := s.dataPrefix(name)
	resp, err := s.h.Client.Get(ctx, prefix, clientv3.WithPrefix())
	require.NoError(s.t, err)
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out
}

// etcdGet reads one raw etcd key; nil if absent. Usable from handlers.
func (s *storeT) etcdGet(ctx context.Context, key string) (*clientv3.GetResponse, error) {
	return s.h.Client.Get(ctx, key)
}

// written returns every object-related key of the cluster (storage, object
// metadata, alarms, alarm index, dead letters) with its mod revision: two
// equal snapshots mean nothing was written in between.
func (s *storeT) written() map[string]int64 {
	s.t.Helper()
	ctx, cancel := etcdCtx()
	defer cancel()
	prefix := s.h.cfg.Prefix
	resp, err := s.h.Client.Get(ctx, prefix, clientv3.WithPrefix())
	require.NoError(s.t, err)
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		for _, area := range []string{"data/", "obj/", "alarm/", "due/", "dead/"} {
			if strings.HasPrefix(rest, area) {
				out[string(kv.Key)] = kv.ModRevision
			}
		}
	}
	return out
}

// queued returns how many calls wait in the mailbox of object name (-1: not
// active).
func (s *storeT) queued(name string) int {
	active, calls, _ := s.h.n().Mailbox(tClass, s.id(name))
	if !active {
		return -1
	}
	return calls
}

func bytesMap(kv map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(kv))
	for k, v := range kv {
		out[k] = []byte(v)
	}
	return out
}

func stringMap(kv map[string][]byte) map[string]string {
	out := make(map[string]string, len(kv))
	for k, v := range kv {
		out[k] = string(v)
	}
	return out
}

func kvKeys(kvs []durable.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

// ---------------------------------------------------------------------------
// Basic semantics
// ---------------------------------------------------------------------------

func TestStorageBasics(t *testing.T) {
	s := newStoreT(t, nil)

	t.Run("GetMissing", func(t *testing.T) {
		s.mustDo("missing", func(ctx context.Context, st durable.Storage) error {
			v, ok, err := st.Get(ctx, "nope")
			assert.NoError(t, err)
			assert.False(t, ok)
			assert.Nil(t, v)
			m, err := st.GetMany(ctx, []string{"nope", "nada"})
			assert.NoError(t, err)
			assert.Empty(t, m)
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Empty(t, l)
			return nil
		})
		assert.Empty(t, s.etcdData("missing"))
	})

	t.Run("ReadsSeeOwnUncommittedWrites", func(t *testing.T) {
		const obj = "own"
		s.put(obj, map[string]string{"c1": "committed", "c2": "committed"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "p", []byte("pending")))
			assert.NoError(t, st.Put(ctx, "c1", []byte("overwritten")))
			ok, err := st.Delete(ctx, "c2")
			assert.NoError(t, err)
			assert.True(t, ok)

			v, ok, err := st.Get(ctx, "p")
			assert.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "pending", string(v))
			v, _, _ = st.Get(ctx, "c1")
			assert.Equal(t, "overwritten", string(v))
			_, ok, _ = st.Get(ctx, "c2")
			assert.False(t, ok, "a pending delete hides the committed value")

			m, err := st.GetMany(ctx, []string{"p", "c1", "c2", "zz"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"p": "pending", "c1": "overwritten"}, stringMap(m))

			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Equal(t, []durable.KV{{Key: "c1", Value: []byte("overwritten")}, {Key: "p", Value: []byte("pending")}}, l)

			// Nothing reached etcd yet.
			resp, err := s.etcdGet(ctx, s.dataKey(obj, "p"))
			if assert.NoError(t, err) {
				assert.Empty(t, resp.Kvs, "a write reached etcd before the event ended")
			}
			return nil
		})
		assert.Equal(t, map[string]string{"c1": "overwritten", "p": "pending"}, s.etcdData(obj))
		// A later event reads the committed state.
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, []string{"p", "c1", "c2"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"p": "pending", "c1": "overwritten"}, stringMap(m))
			return nil
		})
	})

	t.Run("PutOverwrites", func(t *testing.T) {
		const obj = "overwrite"
		s.put(obj, map[string]string{"k": "1"})
		s.put(obj, map[string]string{"k": "2"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "k", []byte("3")))
			assert.NoError(t, st.Put(ctx, "k", []byte("4")))
			v, _, err := st.Get(ctx, "k")
			assert.NoError(t, err)
			assert.Equal(t, "4", string(v))
			return nil
		})
		assert.Equal(t, map[string]string{"k": "4"}, s.etcdData(obj))
	})

	t.Run("GetMany", func(t *testing.T) {
		const obj = "getmany"
		s.put(obj, map[string]string{"a": "1", "b": "2", "c": "3"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, []string{"a", "c", "x", "a"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"a": "1", "c": "3"}, stringMap(m))
			m, err = st.GetMany(ctx, nil)
			assert.NoError(t, err)
			assert.Empty(t, m)
			return nil
		})
	})

	t.Run("EmptyValue", func(t *testing.T) {
		const obj = "empty"
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "nil", nil))
			assert.NoError(t, st.Put(ctx, "empty", []byte{}))
			for _, k := range []string{"nil", "empty"} {
				v, ok, err := st.Get(ctx, k)
				assert.NoError(t, err)
				assert.True(t, ok, "empty value of %q must exist", k)
				assert.Empty(t, v)
			}
			return nil
		})
		assert.Equal(t, map[string]string{"nil": "", "empty": ""}, s.etcdData(obj))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, []string{"nil", "empty"})
			assert.NoError(t, err)
			assert.Len(t, m, 2)
			return nil
		})
	})

	t.Run("Delete", func(t *testing.T) {
		const obj = "delete"
		cases := []struct {
			name    string
			prepare func(ctx context.Context, st durable.Storage) // same event, before Delete
			key     string
			want    bool
		}{
			{"committed", nil, "c", true},
			{"missing", nil, "missing", false},
			{"pending put", func(ctx context.Context, st durable.Storage) { _ = st.Put(ctx, "new", []byte("v")) }, "new", true},
			{"pending put over committed", func(ctx context.Context, st durable.Storage) { _ = st.Put(ctx, "c", []byte("v")) }, "c", true},
			{"pending delete", func(ctx context.Context, st durable.Storage) { _, _ = st.Delete(ctx, "c") }, "c", false},
			{"after DeleteAll", func(ctx context.Context, st durable.Storage) { _ = st.DeleteAll(ctx) }, "c", false},
			{"put after DeleteAll", func(ctx context.Context, st durable.Storage) {
				_ = st.DeleteAll(ctx)
				_ = st.Put(ctx, "c", []byte("v"))
			}, "c", true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s.put(obj, map[string]string{"c": "committed"})
				s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
					if tc.prepare != nil {
						tc.prepare(ctx, st)
					}
					ok, err := st.Delete(ctx, tc.key)
					assert.NoError(t, err)
					assert.Equal(t, tc.want, ok)
					_, ok, err = st.Get(ctx, tc.key)
					assert.NoError(t, err)
					assert.False(t, ok, "deleted key still readable")
					ok, err = st.Delete(ctx, tc.key)
					assert.NoError(t, err)
					assert.False(t, ok, "second delete in the same event must report false")
					return nil
				})
				_, present := s.etcdData(obj)[tc.key]
				assert.False(t, present, "deleted key still in etcd")
			})
		}
	})

	t.Run("DeleteMany", func(t *testing.T) {
		const obj = "deletemany"
		s.put(obj, map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "p", []byte("pending")))
			n, err := st.DeleteMany(ctx, []string{"a", "a", "b", "x", "p"})
			assert.NoError(t, err)
			assert.Equal(t, 3, n, "a (once), b and the pending p existed")
			n, err = st.DeleteMany(ctx, []string{"a", "b", "x"})
			assert.NoError(t, err)
			assert.Equal(t, 0, n)
			n, err = st.DeleteMany(ctx, nil)
			assert.NoError(t, err)
			assert.Equal(t, 0, n)
			m, err := st.GetMany(ctx, []string{"a", "b", "c", "d", "p"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"c": "3", "d": "4"}, stringMap(m))
			return nil
		})
		assert.Equal(t, map[string]string{"c": "3", "d": "4"}, s.etcdData(obj))
	})

	t.Run("DeleteAll", func(t *testing.T) {
		const obj = "deleteall"
		s.put(obj, map[string]string{"a": "1", "b": "2", "m": "3", "z": "4"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "pending", []byte("gone too")))
			assert.NoError(t, st.DeleteAll(ctx))
			_, ok, err := st.Get(ctx, "a")
			assert.NoError(t, err)
			assert.False(t, ok)
			_, ok, _ = st.Get(ctx, "pending")
			assert.False(t, ok)
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Empty(t, l)
			assert.NoError(t, st.Put(ctx, "b", []byte("new b")))
			assert.NoError(t, st.Put(ctx, "n", []byte("new n")))
			return nil
		})
		assert.Equal(t, map[string]string{"b": "new b", "n": "new n"}, s.etcdData(obj))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, []string{"a", "b", "m", "n", "z"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"b": "new b", "n": "new n"}, stringMap(m))
			return nil
		})
	})

	t.Run("DeleteAllDeletesTheAlarm", func(t *testing.T) {
		// DESIGN §1: DeleteAll deletes every key and the alarm (Cloudflare's
		// deleteAll since 2026-02-24); an alarm set after it in the same
		// event stands.
		const obj = "deleteall-alarm"
		at := s.h.Clock.Now().Add(time.Hour)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "a", []byte("1")))
			return st.SetAlarm(ctx, at)
		})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.DeleteAll(ctx))
			_, ok, err := st.GetAlarm(ctx)
			assert.NoError(t, err)
			assert.False(t, ok, "the alarm survived DeleteAll in the event")
			return nil
		})
		assert.Empty(t, s.etcdData(obj))
		ctx, cancel := etcdCtx()
		defer cancel()
		resp, err := s.etcdGet(ctx, s.alarmKey(obj))
		require.NoError(t, err)
		require.Empty(t, resp.Kvs, "DeleteAll kept the alarm")

		later := at.Add(time.Hour)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.SetAlarm(ctx, at))
			assert.NoError(t, st.DeleteAll(ctx))
			return st.SetAlarm(ctx, later)
		})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			got, ok, err := st.GetAlarm(ctx)
			assert.NoError(t, err)
			assert.True(t, ok && got.Equal(later), "alarm %v, want %v", got, later)
			return nil
		})
	})

	t.Run("DeleteAllOnlyThisObject", func(t *testing.T) {
		s.put("neighbour-a", map[string]string{"k": "a"})
		s.put("neighbour-b", map[string]string{"k": "b"})
		s.mustDo("neighbour-a", func(ctx context.Context, st durable.Storage) error { return st.DeleteAll(ctx) })
		assert.Empty(t, s.etcdData("neighbour-a"))
		assert.Equal(t, map[string]string{"k": "b"}, s.etcdData("neighbour-b"))
	})

	t.Run("ValuesAreCopies", func(t *testing.T) {
		const obj = "copies"
		s.put(obj, map[string]string{"c": "committed"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			// Mutating the slice after Put / PutMany.
			v := []byte("pending")
			assert.NoError(t, st.Put(ctx, "p", v))
			v[0] = 'X'
			m := map[string][]byte{"q": []byte("many")}
			assert.NoError(t, st.PutMany(ctx, m))
			m["q"][0] = 'X'
			m["extra"] = []byte("not put")

			// Mutating slices returned by reads, pending and committed.
			for _, k := range []string{"p", "q", "c"} {
				got, _, err := st.Get(ctx, k)
				assert.NoError(t, err)
				if len(got) > 0 {
					got[0] = 'Y'
				}
				gm, err := st.GetMany(ctx, []string{k})
				assert.NoError(t, err)
				if len(gm[k]) > 0 {
					gm[k][0] = 'Z'
				}
			}
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			for _, kv := range l {
				kv.Value[0] = 'W'
			}
			got, err := st.GetMany(ctx, []string{"p", "q", "c", "extra"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"p": "pending", "q": "many", "c": "committed"}, stringMap(got))
			return nil
		})
		assert.Equal(t, map[string]string{"c": "committed", "p": "pending", "q": "many"}, s.etcdData(obj))
		// Committed values served from the object's cache are copies too.
		for i := 0; i < 2; i++ {
			s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
				got, _, err := st.Get(ctx, "p")
				assert.NoError(t, err)
				assert.Equal(t, "pending", string(got))
				got[0] = 'Y'
				l, err := st.List(ctx, durable.ListOptions{Prefix: "q"})
				assert.NoError(t, err)
				if assert.Len(t, l, 1) {
					assert.Equal(t, "many", string(l[0].Value))
					l[0].Value[0] = 'Y'
				}
				return nil
			})
		}
	})

	t.Run("BinaryKeysAndValues", func(t *testing.T) {
		const obj = "binary"
		keys := []string{"\x00", "a\x00b", "\xff\xfe", "ключ", "a/b/c", "/", "..", " "}
		val := []byte{0, 1, 2, 0xff, 0, 0xfe}
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			for _, k := range keys {
				assert.NoError(t, st.Put(ctx, k, append(val, k...)))
			}
			return nil
		})
		data := s.etcdData(obj)
		require.Len(t, data, len(keys))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, keys)
			assert.NoError(t, err)
			for _, k := range keys {
				assert.Equal(t, append(val, k...), m[k], "key %q", k)
			}
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			want := slices.Clone(keys)
			sort.Strings(want)
			assert.Equal(t, want, kvKeys(l))
			return nil
		})
	})
}

// Storage used outside an event of its object fails, and a handle of an
// evicted instance fails with ErrObjectReset.
func TestStorageOutsideEvent(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.IdleTimeout = 10 * time.Second })
	var stash durable.Storage
	s.mustDo("o", func(ctx context.Context, st durable.Storage) error {
		stash = st
		return st.Put(ctx, "k", []byte("v"))
	})
	ctx := context.Background()
	_, _, err := stash.Get(ctx, "k")
	require.ErrorIs(t, err, durable.ErrNotInEvent)
	require.ErrorIs(t, stash.Put(ctx, "k", []byte("x")), durable.ErrNotInEvent)
	_, err = stash.Delete(ctx, "k")
	require.ErrorIs(t, err, durable.ErrNotInEvent)
	_, err = stash.List(ctx, durable.ListOptions{})
	require.ErrorIs(t, err, durable.ErrNotInEvent)
	require.ErrorIs(t, stash.DeleteAll(ctx), durable.ErrNotInEvent)
	require.ErrorIs(t, stash.Sync(ctx), durable.ErrNotInEvent)
	require.Equal(t, map[string]string{"k": "v"}, s.etcdData("o"))

	s.h.eventually(func() bool {
		s.h.advance(time.Second)
		return s.h.n().ActiveObjects() == 0
	}, "object never evicted")
	_, _, err = stash.Get(ctx, "k")
	require.ErrorIs(t, err, durable.ErrObjectReset)
	require.ErrorIs(t, stash.Put(ctx, "k", []byte("x")), durable.ErrObjectReset)
	require.Equal(t, map[string]string{"k": "v"}, s.etcdData("o"))
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

func TestStorageLimits(t *testing.T) {
	s := newStoreT(t, nil)
	key2048 := strings.Repeat("k", durable.MaxKeyBytes)
	key2049 := strings.Repeat("k", durable.MaxKeyBytes+1)
	val128K := bytes.Repeat([]byte{'v'}, durable.MaxValueBytes)
	val128K1 := bytes.Repeat([]byte{'v'}, durable.MaxValueBytes+1)
	keysN := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("k%03d", i)
		}
		out[0] = "pre" // an existing key, which must survive a rejected delete
		return out
	}
	entriesN := func(n int) map[string][]byte {
		out := map[string][]byte{}
		for _, k := range keysN(n) {
			out[k] = []byte("x")
		}
		return out
	}
	small := []byte("x")

	t.Run("Rejected", func(t *testing.T) {
		cases := []struct {
			name string
			op   func(ctx context.Context, st durable.Storage) error
		}{
			{"Get empty key", func(ctx context.Context, st durable.Storage) error { _, _, err := st.Get(ctx, ""); return err }},
			{"Get 2049-byte key", func(ctx context.Context, st durable.Storage) error { _, _, err := st.Get(ctx, key2049); return err }},
			{"GetMany empty key", func(ctx context.Context, st durable.Storage) error {
				_, err := st.GetMany(ctx, []string{"pre", ""})
				return err
			}},
			{"GetMany 2049-byte key", func(ctx context.Context, st durable.Storage) error {
				_, err := st.GetMany(ctx, []string{"pre", key2049})
				return err
			}},
			{"GetMany 129 keys", func(ctx context.Context, st durable.Storage) error {
				_, err := st.GetMany(ctx, keysN(durable.MaxKeysPerOp+1))
				return err
			}},
			{"Put empty key", func(ctx context.Context, st durable.Storage) error { return st.Put(ctx, "", small) }},
			{"Put 2049-byte key", func(ctx context.Context, st durable.Storage) error { return st.Put(ctx, key2049, small) }},
			{"Put 128KiB+1 value", func(ctx context.Context, st durable.Storage) error { return st.Put(ctx, "a", val128K1) }},
			{"PutMany empty key", func(ctx context.Context, st durable.Storage) error {
				return st.PutMany(ctx, map[string][]byte{"a": small, "b": small, "": small})
			}},
			{"PutMany 2049-byte key", func(ctx context.Context, st durable.Storage) error {
				return st.PutMany(ctx, map[string][]byte{"a": small, "b": small, key2049: small})
			}},
			{"PutMany 128KiB+1 value", func(ctx context.Context, st durable.Storage) error {
				return st.PutMany(ctx, map[string][]byte{"a": small, "b": small, "c": val128K1})
			}},
			{"PutMany 129 keys", func(ctx context.Context, st durable.Storage) error {
				m := entriesN(durable.MaxKeysPerOp + 1)
				m["a"] = small
				delete(m, "k001")
				return st.PutMany(ctx, m)
			}},
			{"Delete empty key", func(ctx context.Context, st durable.Storage) error { _, err := st.Delete(ctx, ""); return err }},
			{"Delete 2049-byte key", func(ctx context.Context, st durable.Storage) error { _, err := st.Delete(ctx, key2049); return err }},
			{"DeleteMany empty key", func(ctx context.Context, st durable.Storage) error {
				_, err := st.DeleteMany(ctx, []string{"pre", ""})
				return err
			}},
			{"DeleteMany 2049-byte key", func(ctx context.Context, st durable.Storage) error {
				_, err := st.DeleteMany(ctx, []string{"pre", key2049})
				return err
			}},
			{"DeleteMany 129 keys", func(ctx context.Context, st durable.Storage) error {
				_, err := st.DeleteMany(ctx, keysN(durable.MaxKeysPerOp+1))
				return err
			}},
			{"List Start and StartAfter", func(ctx context.Context, st durable.Storage) error {
				_, err := st.List(ctx, durable.ListOptions{Start: "a", StartAfter: "b"})
				return err
			}},
			{"List negative Limit", func(ctx context.Context, st durable.Storage) error {
				_, err := st.List(ctx, durable.ListOptions{Limit: -1})
				return err
			}},
			{"List 2049-byte Start", func(ctx context.Context, st durable.Storage) error {
				_, err := st.List(ctx, durable.ListOptions{Start: key2049})
				return err
			}},
			{"List 2049-byte Prefix", func(ctx context.Context, st durable.Storage) error {
				_, err := st.List(ctx, durable.ListOptions{Prefix: key2049})
				return err
			}},
			{"SetAlarm zero time", func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, time.Time{}) }},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				obj := fmt.Sprintf("limit-%d", i)
				s.put(obj, map[string]string{"pre": "1"})
				before := s.written()
				var opErr error
				s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
					opErr = tc.op(ctx, st)
					// Nothing of the rejected call was buffered.
					m, err := st.GetMany(ctx, []string{"pre", "a", "b", "c", "k001"})
					assert.NoError(t, err)
					assert.Equal(t, map[string]string{"pre": "1"}, stringMap(m))
					_, ok, err := st.GetAlarm(ctx)
					assert.NoError(t, err)
					assert.False(t, ok)
					return nil
				})
				require.Error(t, opErr)
				require.ErrorIs(t, opErr, durable.ErrInvalidArgument)
				require.Equal(t, before, s.written(), "a rejected call wrote to etcd")
			})
		}
	})

	t.Run("AtTheLimit", func(t *testing.T) {
		const obj = "limit-ok"
		s.put(obj, map[string]string{"pre": "1"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, key2048, []byte("long key")))
			assert.NoError(t, st.Put(ctx, "big", val128K))
			assert.NoError(t, st.PutMany(ctx, entriesN(durable.MaxKeysPerOp)))
			v, ok, err := st.Get(ctx, key2048)
			assert.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "long key", string(v))
			m, err := st.GetMany(ctx, keysN(durable.MaxKeysPerOp))
			assert.NoError(t, err)
			assert.Len(t, m, durable.MaxKeysPerOp)
			return nil
		})
		data := s.etcdData(obj)
		assert.Len(t, data, durable.MaxKeysPerOp+2)
		assert.Equal(t, "long key", data[key2048])
		assert.Len(t, data["big"], durable.MaxValueBytes)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			v, ok, err := st.Get(ctx, "big")
			assert.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, val128K, v)
			l, err := st.List(ctx, durable.ListOptions{Start: key2048, Limit: 1})
			assert.NoError(t, err)
			assert.Equal(t, []string{key2048}, kvKeys(l))
			ok, err = st.Delete(ctx, key2048)
			assert.NoError(t, err)
			assert.True(t, ok)
			n, err := st.DeleteMany(ctx, keysN(durable.MaxKeysPerOp))
			assert.NoError(t, err)
			assert.Equal(t, durable.MaxKeysPerOp, n)
			return nil
		})
		assert.Equal(t, []string{"big"}, slices.Collect(maps.Keys(s.etcdData(obj))))
	})

	t.Run("HandlerReturnsLimitError", func(t *testing.T) {
		const obj = "limit-partial"
		s.put(obj, map[string]string{"pre": "1"})
		before := s.written()
		_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			st := o.S()
			assert.NoError(t, st.Put(ctx, "a", small))
			assert.NoError(t, st.PutMany(ctx, map[string][]byte{"b": small, "c": small}))
			_, _ = st.Delete(ctx, "pre")
			assert.NoError(t, st.SetAlarm(ctx, s.h.Clock.Now().Add(time.Hour)))
			err := st.Put(ctx, "d", val128K1)
			assert.ErrorIs(t, err, durable.ErrInvalidArgument)
			return nil, err
		})
		// The runtime's refusal keeps its identity through the handler
		// (the server maps it to InvalidArgument), and fails the event.
		require.ErrorIs(t, err, durable.ErrInvalidArgument)
		require.Equal(t, before, s.written(), "a failed event wrote to etcd")
		require.Equal(t, map[string]string{"pre": "1"}, s.etcdData(obj))
	})
}

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

// listFixture is the data set of the table test, in byte order.
var listFixture = []string{"0", "9", "A", "B", "a", "a\x00", "aa", "ab", "b", "b\x00", "ba", "\xff"}

func TestStorageListTable(t *testing.T) {
	all := listFixture
	rev := func(keys []string) []string { out := slices.Clone(keys); slices.Reverse(out); return out }
	cases := []struct {
		name string
		opts durable.ListOptions
		want []string
	}{
		{"all", durable.ListOptions{}, all},
		{"Start", durable.ListOptions{Start: "a"}, []string{"a", "a\x00", "aa", "ab", "b", "b\x00", "ba", "\xff"}},
		{"Start between keys", durable.ListOptions{Start: "a\x01"}, []string{"aa", "ab", "b", "b\x00", "ba", "\xff"}},
		{"Start past every key", durable.ListOptions{Start: "\xff\x00"}, nil},
		{"Start lowercase z", durable.ListOptions{Start: "zzz"}, []string{"\xff"}},
		{"StartAfter", durable.ListOptions{StartAfter: "a"}, []string{"a\x00", "aa", "ab", "b", "b\x00", "ba", "\xff"}},
		{"StartAfter a\\x00", durable.ListOptions{StartAfter: "a\x00"}, []string{"aa", "ab", "b", "b\x00", "ba", "\xff"}},
		{"StartAfter missing key", durable.ListOptions{StartAfter: "Z"}, []string{"a", "a\x00", "aa", "ab", "b", "b\x00", "ba", "\xff"}},
		{"End", durable.ListOptions{End: "a"}, []string{"0", "9", "A", "B"}},
		{"End a\\x00", durable.ListOptions{End: "a\x00"}, []string{"0", "9", "A", "B", "a"}},
		{"End \\xff", durable.ListOptions{End: "\xff"}, all[:len(all)-1]},
		{"Start End uppercase", durable.ListOptions{Start: "A", End: "a"}, []string{"A", "B"}},
		{"Start End digits", durable.ListOptions{Start: "0", End: "A"}, []string{"0", "9"}},
		{"Start after End", durable.ListOptions{Start: "c", End: "b"}, nil},
		{"Start equals End", durable.ListOptions{Start: "b", End: "b"}, nil},
		{"StartAfter End", durable.ListOptions{StartAfter: "aa", End: "b\x00"}, []string{"ab", "b"}},
		{"Prefix a", durable.ListOptions{Prefix: "a"}, []string{"a", "a\x00", "aa", "ab"}},
		{"Prefix b", durable.ListOptions{Prefix: "b"}, []string{"b", "b\x00", "ba"}},
		{"Prefix A is case-sensitive", durable.ListOptions{Prefix: "A"}, []string{"A"}},
		{"Prefix a\\x00", durable.ListOptions{Prefix: "a\x00"}, []string{"a\x00"}},
		{"Prefix \\xff", durable.ListOptions{Prefix: "\xff"}, []string{"\xff"}},
		{"Prefix \\xff reverse", durable.ListOptions{Prefix: "\xff", Reverse: true}, []string{"\xff"}},
		{"Prefix none", durable.ListOptions{Prefix: "c"}, nil},
		{"Prefix longer than keys", durable.ListOptions{Prefix: "aaa"}, nil},
		{"Prefix Start inside", durable.ListOptions{Prefix: "a", Start: "aa"}, []string{"aa", "ab"}},
		{"Prefix Start below", durable.ListOptions{Prefix: "a", Start: "0"}, []string{"a", "a\x00", "aa", "ab"}},
		{"Prefix Start above", durable.ListOptions{Prefix: "a", Start: "b"}, nil},
		{"Prefix End inside", durable.ListOptions{Prefix: "a", End: "aa"}, []string{"a", "a\x00"}},
		{"Prefix End above", durable.ListOptions{Prefix: "a", End: "z"}, []string{"a", "a\x00", "aa", "ab"}},
		{"Prefix End below", durable.ListOptions{Prefix: "b", End: "a"}, nil},
		{"Prefix StartAfter prefix", durable.ListOptions{Prefix: "a", StartAfter: "a"}, []string{"a\x00", "aa", "ab"}},
		{"Prefix StartAfter last", durable.ListOptions{Prefix: "a", StartAfter: "ab"}, nil},
		{"Prefix Start End", durable.ListOptions{Prefix: "a", Start: "a\x00", End: "ab"}, []string{"a\x00", "aa"}},
		{"Reverse", durable.ListOptions{Reverse: true}, rev(all)},
		{"Limit", durable.ListOptions{Limit: 3}, []string{"0", "9", "A"}},
		{"Limit 1", durable.ListOptions{Limit: 1}, []string{"0"}},
		{"Limit above count", durable.ListOptions{Limit: 100}, all},
		{"Reverse Limit", durable.ListOptions{Reverse: true, Limit: 3}, []string{"\xff", "ba", "b\x00"}},
		{"StartAfter Limit Reverse", durable.ListOptions{StartAfter: "a", Limit: 2, Reverse: true}, []string{"\xff", "ba"}},
		{"StartAfter Limit", durable.ListOptions{StartAfter: "a\x00", Limit: 2}, []string{"aa", "ab"}},
		{"Start Reverse Limit", durable.ListOptions{Start: "b", Reverse: true, Limit: 2}, []string{"\xff", "ba"}},
		{"End Reverse Limit", durable.ListOptions{End: "b", Reverse: true, Limit: 2}, []string{"ab", "aa"}},
		{"Prefix Reverse", durable.ListOptions{Prefix: "a", Reverse: true}, []string{"ab", "aa", "a\x00", "a"}},
		{"Prefix Reverse Limit", durable.ListOptions{Prefix: "b", Reverse: true, Limit: 2}, []string{"ba", "b\x00"}},
		{"Start End Reverse Limit", durable.ListOptions{Start: "9", End: "a\x00", Reverse: true, Limit: 3}, []string{"a", "B", "A"}},
	}

	check := func(t *testing.T, s *storeT, obj string, setup func(ctx context.Context, st durable.Storage) error) {
		t.Helper()
		got := make([][]string, len(cases))
		var setupErr error
		errs := map[string]error{}
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			if setup != nil {
				setupErr = setup(ctx, st)
			}
			for i, tc := range cases {
				l, err := st.List(ctx, tc.opts)
				assert.NoError(t, err, tc.name)
				got[i] = kvKeys(l)
				for _, kv := range l {
					assert.Equal(t, "v:"+kv.Key, string(kv.Value), "%s: value of %q", tc.name, kv.Key)
				}
			}
			_, errs["both starts"] = st.List(ctx, durable.ListOptions{Start: "a", StartAfter: "a"})
			_, errs["negative limit"] = st.List(ctx, durable.ListOptions{Limit: -1})
			_, errs["reverse negative limit"] = st.List(ctx, durable.ListOptions{Limit: -5, Reverse: true, Prefix: "a"})
			return nil
		})
		require.NoError(t, setupErr)
		for i, tc := range cases {
			want := tc.want
			if want == nil {
				want = []string{}
			}
			assert.Equal(t, want, got[i], "%s: %#v", tc.name, tc.opts)
		}
		for name, err := range errs {
			assert.ErrorIs(t, err, durable.ErrInvalidArgument, name)
		}
		assert.ErrorContains(t, errs["negative limit"], "0 means no limit")
	}
	fixture := func() map[string][]byte {
		m := map[string][]byte{}
		for _, k := range listFixture {
			m[k] = []byte("v:" + k)
		}
		return m
	}

	s := newStoreT(t, nil)
	t.Run("Pending", func(t *testing.T) {
		check(t, s, "pending", func(ctx context.Context, st durable.Storage) error { return st.PutMany(ctx, fixture()) })
	})
	t.Run("Committed", func(t *testing.T) {
		s.mustDo("committed", func(ctx context.Context, st durable.Storage) error { return st.PutMany(ctx, fixture()) })
		check(t, s, "committed", nil)
	})
	t.Run("Mixed", func(t *testing.T) {
		// Half committed, half pending; decoys committed and deleted in the
		// event, keys overwritten in the event.
		f := fixture()
		committed, pending := map[string][]byte{}, map[string][]byte{}
		for i, k := range listFixture {
			if i%2 == 0 {
				committed[k] = f[k]
			} else {
				pending[k] = f[k]
				committed[k] = []byte("stale")
			}
		}
		for _, k := range []string{"00", "a\x00\x00", "ac", "b\x01", "\xff\xff"} {
			committed[k] = []byte("decoy")
		}
		s.mustDo("mixed", func(ctx context.Context, st durable.Storage) error { return st.PutMany(ctx, committed) })
		check(t, s, "mixed", func(ctx context.Context, st durable.Storage) error {
			if err := st.PutMany(ctx, pending); err != nil {
				return err
			}
			_, err := st.DeleteMany(ctx, []string{"00", "a\x00\x00", "ac", "b\x01", "\xff\xff"})
			return err
		})
		// And the same once all of it is committed.
		check(t, s, "mixed", nil)
	})
	t.Run("AfterDeleteAll", func(t *testing.T) {
		s.mustDo("cleared", func(ctx context.Context, st durable.Storage) error {
			return st.PutMany(ctx, map[string][]byte{"0": []byte("old"), "a": []byte("old"), "zz": []byte("old"), "\xff\xff": []byte("old")})
		})
		check(t, s, "cleared", func(ctx context.Context, st durable.Storage) error {
			if err := st.DeleteAll(ctx); err != nil {
				return err
			}
			return st.PutMany(ctx, fixture())
		})
		check(t, s, "cleared", nil)
		want := map[string]string{}
		for _, k := range listFixture {
			want[k] = "v:" + k
		}
		require.Equal(t, want, s.etcdData("cleared"))
	})
}

func TestStorageListDeleteAllMerge(t *testing.T) {
	s := newStoreT(t, nil)
	const obj = "merge"
	s.put(obj, map[string]string{"a": "1", "b": "2", "x": "old", "y": "3", "\xff": "4"})
	s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
		assert.NoError(t, st.Put(ctx, "before", []byte("dropped by DeleteAll")))
		assert.NoError(t, st.DeleteAll(ctx))
		assert.NoError(t, st.Put(ctx, "x", []byte("new")))
		for _, opts := range []durable.ListOptions{{}, {Reverse: true}, {Limit: 1}, {Start: "a"}, {End: "y"}, {Prefix: "x"}, {StartAfter: "a", Limit: 5, Reverse: true}} {
			l, err := st.List(ctx, opts)
			assert.NoError(t, err)
			assert.Equal(t, []durable.KV{{Key: "x", Value: []byte("new")}}, l, "%+v", opts)
		}
		l, err := st.List(ctx, durable.ListOptions{Prefix: "a"})
		assert.NoError(t, err)
		assert.Empty(t, l)
		return nil
	})
	require.Equal(t, map[string]string{"x": "new"}, s.etcdData(obj))

	// Deletions in the event hide committed keys, also under Limit: the
	// limit applies after the merge.
	s.put(obj, map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6"})
	s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
		_, err := st.DeleteMany(ctx, []string{"a", "b", "c", "x", "f"})
		assert.NoError(t, err)
		assert.NoError(t, st.Put(ctx, "bb", []byte("p")))
		l, err := st.List(ctx, durable.ListOptions{Limit: 2})
		assert.NoError(t, err)
		assert.Equal(t, []string{"bb", "d"}, kvKeys(l))
		l, err = st.List(ctx, durable.ListOptions{Limit: 2, Reverse: true})
		assert.NoError(t, err)
		assert.Equal(t, []string{"e", "d"}, kvKeys(l))
		l, err = st.List(ctx, durable.ListOptions{StartAfter: "bb", Limit: 1})
		assert.NoError(t, err)
		assert.Equal(t, []string{"d"}, kvKeys(l))
		return nil
	})
	require.Equal(t, map[string]string{"bb": "p", "d": "4", "e": "5"}, s.etcdData(obj))
}

// listModel is the reference: a plain map listed by sorting and filtering.
type listModel map[string]string

func (m listModel) list(o durable.ListOptions) ([]durable.KV, error) {
	if o.Start != "" && o.StartAfter != "" {
		return nil, durable.ErrInvalidArgument
	}
	if o.Limit < 0 {
		return nil, durable.ErrInvalidArgument
	}
	keys := slices.Sorted(maps.Keys(m))
	var out []durable.KV
	for _, k := range keys {
		if (o.Start == "" || k >= o.Start) && (o.StartAfter == "" || k > o.StartAfter) &&
			(o.End == "" || k < o.End) && strings.HasPrefix(k, o.Prefix) {
			out = append(out, durable.KV{Key: k, Value: []byte(m[k])})
		}
	}
	if o.Reverse {
		slices.Reverse(out)
	}
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

// modelOp is one storage call of the property test.
type modelOp struct {
	kind string // put, delete, deleteMany, deleteAll, getMany, list
	kv   map[string]string
	keys []string
	opts durable.ListOptions
}

func (op modelOp) String() string {
	switch op.kind {
	case "put":
		return fmt.Sprintf("PutMany(%q)", op.kv)
	case "list":
		return fmt.Sprintf("List(%#v)", op.opts)
	default:
		return fmt.Sprintf("%s(%q)", op.kind, op.keys)
	}
}

func (op modelOp) readOnly() bool { return op.kind == "getMany" || op.kind == "list" }

func fmtErr(err error) string {
	if errors.Is(err, durable.ErrInvalidArgument) {
		return "error: invalid argument"
	}
	return "error: " + err.Error()
}

func fmtKVs(kvs []durable.KV) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = fmt.Sprintf("%q=%q", kv.Key, kv.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func fmtMap(m map[string][]byte) string {
	kvs := make([]durable.KV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kvs = append(kvs, durable.KV{Key: k, Value: m[k]})
	}
	return fmtKVs(kvs)
}

// apply runs op against the model and formats its result.
func (m listModel) apply(op modelOp) string {
	switch op.kind {
	case "put":
		for k, v := range op.kv {
			m[k] = v
		}
		return "ok"
	case "delete":
		_, ok := m[op.keys[0]]
		delete(m, op.keys[0])
		return fmt.Sprint(ok)
	case "deleteMany":
		n := 0
		for _, k := range op.keys {
			if _, ok := m[k]; ok {
				n++
				delete(m, k)
			}
		}
		return fmt.Sprint(n)
	case "deleteAll":
		clear(m)
		return "ok"
	case "getMany":
		out := map[string][]byte{}
		for _, k := range op.keys {
			if v, ok := m[k]; ok {
				out[k] = []byte(v)
			}
		}
		return fmtMap(out)
	case "list":
		l, err := m.list(op.opts)
		if err != nil {
			return fmtErr(err)
		}
		return fmtKVs(l)
	}
	panic("unknown op " + op.kind)
}

// execModelOp runs op against real storage and formats its result like apply.
func execModelOp(ctx context.Context, st durable.Storage, op modelOp) string {
	switch op.kind {
	case "put":
		if err := st.PutMany(ctx, bytesMap(op.kv)); err != nil {
			return fmtErr(err)
		}
		return "ok"
	case "delete":
		ok, err := st.Delete(ctx, op.keys[0])
		if err != nil {
			return fmtErr(err)
		}
		return fmt.Sprint(ok)
	case "deleteMany":
		n, err := st.DeleteMany(ctx, op.keys)
		if err != nil {
			return fmtErr(err)
		}
		return fmt.Sprint(n)
	case "deleteAll":
		if err := st.DeleteAll(ctx); err != nil {
			return fmtErr(err)
		}
		return "ok"
	case "getMany":
		m, err := st.GetMany(ctx, op.keys)
		if err != nil {
			return fmtErr(err)
		}
		return fmtMap(m)
	case "list":
		l, err := st.List(ctx, op.opts)
		if err != nil {
			return fmtErr(err)
		}
		return fmtKVs(l)
	}
	return "unknown op " + op.kind
}

// TestStorageListModel compares List (and the writes and reads around it)
// with the reference model for many random option combinations, on data that
// is partly committed and partly pending in the event, then again once the
// event has committed.
func TestStorageListModel(t *testing.T) {
	s := newStoreT(t, nil)
	const obj = "model"
	rng := rand.New(rand.NewPCG(20300101, 42))

	alphabet := []byte{0x00, '0', '9', 'A', 'Z', 'a', 'b', 0xff}
	randStr := func(minLen, maxLen int) string {
		b := make([]byte, minLen+rng.IntN(maxLen-minLen+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	poolSet := map[string]bool{"a": true, "a\x00": true, "aa": true, "b": true, "\xff": true}
	for _, c1 := range alphabet {
		poolSet[string([]byte{c1})] = true
		for _, c2 := range alphabet {
			poolSet[string([]byte{c1, c2})] = true
		}
	}
	for len(poolSet) < 110 {
		poolSet[randStr(3, 3)] = true
	}
	pool := slices.Sorted(maps.Keys(poolSet))
	key := func() string { return pool[rng.IntN(len(pool))] }
	bound := func() string {
		if rng.IntN(2) == 0 {
			return key()
		}
		return randStr(1, 3)
	}
	randOpts := func() durable.ListOptions {
		var o durable.ListOptions
		switch r := rng.IntN(40); {
		case r < 12:
			o.Start = bound()
		case r < 24:
			o.StartAfter = bound()
		case r == 24:
			o.Start, o.StartAfter = bound(), bound() // an error
		}
		if rng.IntN(5) < 2 {
			o.End = bound()
		}
		if rng.IntN(3) == 0 {
			switch rng.IntN(6) {
			case 0:
				o.Prefix = "\xff"
			case 1:
				o.Prefix = "\xff\xff"
			default:
				o.Prefix = randStr(1, 2)
			}
		}
		o.Reverse = rng.IntN(2) == 0
		switch r := rng.IntN(40); {
		case r == 0:
			o.Limit = -1 - rng.IntN(3) // an error
		case r < 20:
			o.Limit = 1 + rng.IntN(8)
		}
		return o
	}
	keys := func(maxN int) []string {
		out := make([]string, 1+rng.IntN(maxN))
		for i := range out {
			out[i] = key()
		}
		return out
	}
	value := func(round, i int) string {
		if rng.IntN(10) == 0 {
			return ""
		}
		return fmt.Sprintf("r%d.%d", round, i)
	}
	randWrite := func(round, i int) modelOp {
		switch r := rng.IntN(20); {
		case r < 10:
			kv := map[string]string{}
			for _, k := range keys(6) {
				kv[k] = value(round, i)
			}
			return modelOp{kind: "put", kv: kv}
		case r < 14:
			return modelOp{kind: "delete", keys: []string{key()}}
		case r < 18:
			return modelOp{kind: "deleteMany", keys: keys(6)}
		default:
			return modelOp{kind: "getMany", keys: keys(8)}
		}
	}

	m := listModel{}
	const rounds = 12
	for round := 0; round < rounds; round++ {
		// Plan the event: writes interleaved with reads, sometimes a
		// DeleteAll in the middle.
		var ops []modelOp
		if round == 0 {
			kv := map[string]string{}
			for len(kv) < 60 {
				kv[key()] = value(round, len(kv))
			}
			ops = append(ops, modelOp{kind: "put", kv: kv})
		}
		nWrites := 10 + rng.IntN(10)
		clearAt := -1
		if round > 0 && round%3 == 0 {
			clearAt = rng.IntN(nWrites)
		}
		for i := 0; i < nWrites; i++ {
			if i == clearAt {
				ops = append(ops, modelOp{kind: "deleteAll"})
			}
			ops = append(ops, randWrite(round, i))
			for j := 0; j < 3; j++ {
				ops = append(ops, modelOp{kind: "list", opts: randOpts()})
			}
		}
		for j := 0; j < 30; j++ {
			ops = append(ops, modelOp{kind: "list", opts: randOpts()})
		}
		want := make([]string, len(ops))
		for i, op := range ops {
			want[i] = m.apply(op)
		}

		// Before commit: the event's own writes merged with committed data.
		got := make([]string, len(ops))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			for i, op := range ops {
				got[i] = execModelOp(ctx, st, op)
			}
			return nil
		})
		failures := 0
		for i := range ops {
			if !assert.Equal(t, want[i], got[i], "round %d (pending), op %d: %v", round, i, ops[i]) {
				if failures++; failures == 5 {
					t.FailNow()
				}
			}
		}

		// etcd holds exactly the model.
		require.Equal(t, map[string]string(m), s.etcdData(obj), "round %d: etcd differs from the model", round)

		// After commit: the reads of the round again, on committed data only.
		var reads []modelOp
		for _, op := range ops {
			if op.readOnly() {
				reads = append(reads, op)
			}
		}
		for j := 0; j < 30; j++ {
			reads = append(reads, modelOp{kind: "list", opts: randOpts()})
		}
		wantReads := make([]string, len(reads))
		for i, op := range reads {
			wantReads[i] = m.apply(op)
		}
		gotReads := make([]string, len(reads))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			for i, op := range reads {
				gotReads[i] = execModelOp(ctx, st, op)
			}
			return nil
		})
		for i := range reads {
			if !assert.Equal(t, wantReads[i], gotReads[i], "round %d (committed), read %d: %v", round, i, reads[i]) {
				if failures++; failures == 5 {
					t.FailNow()
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

func TestStorageTransaction(t *testing.T) {
	s := newStoreT(t, nil)
	errBoom := errors.New("boom")

	t.Run("SyncInsideIsRefusedAndWritesNothing", func(t *testing.T) {
		// Issue: Sync inside a failed Transaction committed the
		// transaction's writes, DeleteAll included.
		const obj = "tx-sync"
		before := s.h.Clock.Now().Add(time.Hour)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "k", []byte("old")))
			return st.SetAlarm(ctx, before)
		})
		unchanged := func(ctx context.Context, st durable.Storage, when string) {
			m, err := st.GetMany(ctx, []string{"k", "x"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"k": "old"}, stringMap(m), when)
			at, ok, err := st.GetAlarm(ctx)
			assert.NoError(t, err)
			assert.True(t, ok && at.Equal(before), "%s: alarm %v, want %v", when, at, before)
		}
		var syncErr, nestedErr error
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			err := st.Transaction(ctx, func(tx durable.Storage) error {
				assert.NoError(t, tx.Put(ctx, "k", []byte("new")))
				assert.NoError(t, tx.Put(ctx, "x", []byte("1")))
				assert.NoError(t, tx.SetAlarm(ctx, before.Add(time.Hour)))
				assert.NoError(t, tx.DeleteAll(ctx))
				syncErr = tx.Sync(ctx)
				nestedErr = tx.Transaction(ctx, func(inner durable.Storage) error { return inner.Sync(ctx) })
				return errBoom
			})
			assert.ErrorIs(t, err, errBoom)
			unchanged(ctx, st, "in the same event")
			return nil
		})
		require.ErrorIs(t, syncErr, durable.ErrSyncInTransaction)
		require.ErrorIs(t, syncErr, durable.ErrInvalidArgument)
		require.ErrorIs(t, nestedErr, durable.ErrSyncInTransaction, "Sync in a nested transaction")
		st, ok := status.FromError(node.ToStatus(syncErr, ""))
		require.True(t, ok)
		require.Equal(t, codes.InvalidArgument, st.Code())
		require.Equal(t, "SYNC_IN_TRANSACTION", client.Detail(st.Err()).GetReason())

		require.Equal(t, map[string]string{"k": "old"}, s.etcdData(obj), "in etcd")
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			unchanged(ctx, st, "in the next event")
			return nil
		})
		s.h.restart()
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error { unchanged(ctx, st, "after a restart"); return nil })
	})

	t.Run("SyncAfterATransactionCommitsIt", func(t *testing.T) {
		const obj = "tx-then-sync"
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Transaction(ctx, func(tx durable.Storage) error { return tx.Put(ctx, "k", []byte("v")) }))
			return st.Sync(ctx)
		})
		require.Equal(t, map[string]string{"k": "v"}, s.etcdData(obj))
	})

	t.Run("RolledBackOnError", func(t *testing.T) {
		const obj = "tx-rollback"
		s.put(obj, map[string]string{"c": "committed", "d": "committed"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "before", []byte("kept")))
			err := st.Transaction(ctx, func(tx durable.Storage) error {
				assert.NoError(t, tx.Put(ctx, "in", []byte("rolled back")))
				assert.NoError(t, tx.Put(ctx, "before", []byte("overwritten")))
				assert.NoError(t, tx.Put(ctx, "c", []byte("overwritten")))
				ok, err := tx.Delete(ctx, "d")
				assert.NoError(t, err)
				assert.True(t, ok)
				// Inside, the transaction sees its own writes.
				v, _, err := tx.Get(ctx, "in")
				assert.NoError(t, err)
				assert.Equal(t, "rolled back", string(v))
				return fmt.Errorf("wrapped: %w", errBoom)
			})
			assert.ErrorIs(t, err, errBoom, "Transaction returns fn's error")
			m, err := st.GetMany(ctx, []string{"before", "in", "c", "d"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"before": "kept", "c": "committed", "d": "committed"}, stringMap(m))
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Equal(t, []string{"before", "c", "d"}, kvKeys(l))
			return nil
		})
		require.Equal(t, map[string]string{"before": "kept", "c": "committed", "d": "committed"}, s.etcdData(obj))
	})

	t.Run("KeptOnSuccess", func(t *testing.T) {
		const obj = "tx-kept"
		s.put(obj, map[string]string{"c": "committed", "d": "committed"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			err := st.Transaction(ctx, func(tx durable.Storage) error {
				assert.NoError(t, tx.Put(ctx, "in", []byte("kept")))
				_, err := tx.Delete(ctx, "d")
				return err
			})
			assert.NoError(t, err)
			m, err := st.GetMany(ctx, []string{"in", "c", "d"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"in": "kept", "c": "committed"}, stringMap(m))
			return nil
		})
		require.Equal(t, map[string]string{"in": "kept", "c": "committed"}, s.etcdData(obj))
	})

	t.Run("DeleteAllRolledBack", func(t *testing.T) {
		const obj = "tx-deleteall"
		s.put(obj, map[string]string{"a": "1", "b": "2"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "p", []byte("pending")))
			err := st.Transaction(ctx, func(tx durable.Storage) error {
				assert.NoError(t, tx.DeleteAll(ctx))
				assert.NoError(t, tx.Put(ctx, "x", []byte("x")))
				return errBoom
			})
			assert.ErrorIs(t, err, errBoom)
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Equal(t, []string{"a", "b", "p"}, kvKeys(l))
			return nil
		})
		require.Equal(t, map[string]string{"a": "1", "b": "2", "p": "pending"}, s.etcdData(obj))
	})

	t.Run("Nested", func(t *testing.T) {
		cases := []struct {
			name      string
			innerErr  error
			outerErr  error
			wantEtcd  map[string]string
			wantInner bool
		}{
			{"both succeed", nil, nil, map[string]string{"pre": "1", "outer": "o", "inner": "i", "after": "a"}, true},
			{"inner fails", errBoom, nil, map[string]string{"pre": "1", "outer": "o", "after": "a"}, false},
			{"outer fails after inner succeeded", nil, errBoom, map[string]string{"pre": "1"}, false},
			{"both fail", errBoom, errBoom, map[string]string{"pre": "1"}, false},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				obj := fmt.Sprintf("tx-nested-%d", i)
				s.put(obj, map[string]string{"pre": "1"})
				s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
					err := st.Transaction(ctx, func(outer durable.Storage) error {
						assert.NoError(t, outer.Put(ctx, "outer", []byte("o")))
						_, err := outer.Delete(ctx, "pre")
						assert.NoError(t, err)
						err = outer.Transaction(ctx, func(inner durable.Storage) error {
							assert.NoError(t, inner.Put(ctx, "inner", []byte("i")))
							assert.NoError(t, inner.Put(ctx, "outer", []byte("changed by inner")))
							return tc.innerErr
						})
						assert.ErrorIs(t, err, tc.innerErr)
						_, ok, _ := outer.Get(ctx, "inner")
						assert.Equal(t, tc.innerErr == nil, ok, "inner write visible after inner transaction")
						if tc.innerErr != nil {
							v, _, _ := outer.Get(ctx, "outer")
							assert.Equal(t, "o", string(v), "inner overwrite rolled back")
						}
						assert.NoError(t, outer.Put(ctx, "outer", []byte("o")))
						assert.NoError(t, outer.Put(ctx, "after", []byte("a")))
						_, err = outer.Delete(ctx, "after")
						assert.NoError(t, err)
						assert.NoError(t, outer.Put(ctx, "after", []byte("a")))
						// Restore "pre" so that success keeps it.
						assert.NoError(t, outer.Put(ctx, "pre", []byte("1")))
						return tc.outerErr
					})
					assert.ErrorIs(t, err, tc.outerErr)
					return nil
				})
				require.Equal(t, tc.wantEtcd, s.etcdData(obj))
			})
		}
	})

	t.Run("AlarmRolledBack", func(t *testing.T) {
		const obj = "tx-alarm"
		at := s.h.Clock.Now().Add(time.Hour)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, at) })
		ctx, cancel := etcdCtx()
		defer cancel()
		before, err := s.etcdGet(ctx, s.alarmKey(obj))
		require.NoError(t, err)
		require.Len(t, before.Kvs, 1)
		snapshot := s.written()

		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			for _, change := range []func(tx durable.Storage) error{
				func(tx durable.Storage) error { return tx.SetAlarm(ctx, at.Add(time.Hour)) },
				func(tx durable.Storage) error { return tx.DeleteAlarm(ctx) },
			} {
				err := st.Transaction(ctx, func(tx durable.Storage) error {
					assert.NoError(t, change(tx))
					return errBoom
				})
				assert.ErrorIs(t, err, errBoom)
				got, ok, err := st.GetAlarm(ctx)
				assert.NoError(t, err)
				assert.True(t, ok)
				assert.True(t, got.Equal(at), "alarm %v after rollback, want %v", got, at)
			}
			return nil
		})
		require.Equal(t, snapshot, s.written(), "a rolled-back alarm change was written")

		// A kept alarm change inside a transaction is committed.
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			return st.Transaction(ctx, func(tx durable.Storage) error { return tx.DeleteAlarm(ctx) })
		})
		after, err := s.etcdGet(ctx, s.alarmKey(obj))
		require.NoError(t, err)
		require.Empty(t, after.Kvs)

		// A rolled-back SetAlarm on an object without an alarm leaves none.
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			err := st.Transaction(ctx, func(tx durable.Storage) error {
				assert.NoError(t, tx.SetAlarm(ctx, at))
				return errBoom
			})
			assert.ErrorIs(t, err, errBoom)
			_, ok, err := st.GetAlarm(ctx)
			assert.NoError(t, err)
			assert.False(t, ok)
			return nil
		})
		after, err = s.etcdGet(ctx, s.alarmKey(obj))
		require.NoError(t, err)
		require.Empty(t, after.Kvs)
	})
}

// ---------------------------------------------------------------------------
// Atomic events
// ---------------------------------------------------------------------------

func TestStorageAtomicEvent(t *testing.T) {
	s := newStoreT(t, nil)
	cases := []struct {
		name string
		fail func() error
		want string
	}{
		{"error", func() error { return errors.New("handler says no") }, "handler says no"},
		{"panic", func() error { panic("handler exploded") }, "handler exploded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := "atomic-" + tc.name
			s.mustRun(obj, inc)
			s.put(obj, map[string]string{"c": "committed", "d": "committed"})
			runs := s.factoryRuns.Load()
			before := s.written()
			_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
				st := o.S()
				_, _ = inc(ctx, o)
				assert.NoError(t, st.Put(ctx, "new", []byte("x")))
				assert.NoError(t, st.Put(ctx, "c", []byte("changed")))
				_, err := st.Delete(ctx, "d")
				assert.NoError(t, err)
				assert.NoError(t, st.Transaction(ctx, func(tx durable.Storage) error {
					return tx.Put(ctx, "tx", []byte("x"))
				}))
				assert.NoError(t, st.SetAlarm(ctx, s.h.Clock.Now().Add(time.Hour)))
				return []byte("never"), tc.fail()
			})
			require.Error(t, err)
			var oe *durable.ObjectError
			require.ErrorAs(t, err, &oe)
			require.Contains(t, oe.Message, tc.want)
			require.Equal(t, before, s.written(), "a failed event wrote to etcd")

			// The instance was thrown away: its counter, incremented in
			// the failed event, does not leak into the next one.
			require.Equal(t, "2", string(s.mustRun(obj, inc)))
			require.Equal(t, runs+1, s.factoryRuns.Load(), "the factory did not run again")
			s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
				m, err := st.GetMany(ctx, []string{"new", "c", "d", "tx"})
				assert.NoError(t, err)
				assert.Equal(t, map[string]string{"c": "committed", "d": "committed"}, stringMap(m))
				_, ok, err := st.GetAlarm(ctx)
				assert.NoError(t, err)
				assert.False(t, ok)
				return nil
			})
		})
	}

	t.Run("FailedFirstEventStoresNothing", func(t *testing.T) {
		// Not even the object's metadata (its name).
		before := s.written()
		_, err := s.run("atomic-first", func(ctx context.Context, o *tObj) ([]byte, error) {
			assert.NoError(t, o.S().Put(ctx, "k", []byte("v")))
			return nil, errors.New("no")
		})
		var oe *durable.ObjectError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, before, s.written())
	})
}

// ---------------------------------------------------------------------------
// Output gate
// ---------------------------------------------------------------------------

// setCommitHook installs n.beforeCommit. The hook is read by object
// goroutines without a lock: install and clear it only while no event can be
// committing, and let a channel operation (the invocation) order it.
func (s *storeT) setCommitHook(fn func(ops []clientv3.Op) error) { s.h.setCommitHook(fn) }

func TestStorageOutputGate(t *testing.T) {
	errInjected := errors.New("injected commit failure")

	t.Run("CommitFailure", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "gate"
		require.Equal(t, "1", string(s.mustRun(obj, inc)))
		runs := s.factoryRuns.Load()
		before := s.written()

		var hookCalls atomic.Int32
		s.setCommitHook(func([]clientv3.Op) error { hookCalls.Add(1); return errInjected })
		res, err := s.invoke(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			out, err := inc(ctx, o) // memory now says 2
			if err != nil {
				return nil, err
			}
			return out, o.S().Put(ctx, "other", []byte("x"))
		})
		s.setCommitHook(nil)
		require.Error(t, err)
		require.ErrorIs(t, err, durable.ErrCommitUnknown)
		require.ErrorIs(t, err, errInjected)
		require.Nil(t, res.Payload, "a reply was released without its commit")
		require.EqualValues(t, 1, hookCalls.Load())
		require.Equal(t, before, s.written())
		require.Equal(t, map[string]string{"mem": "1"}, s.etcdData(obj))

		// The object was reset: the next event sees storage (1), not the
		// lost in-memory 2.
		require.Equal(t, "2", string(s.mustRun(obj, inc)))
		require.Equal(t, runs+1, s.factoryRuns.Load(), "the factory did not run again")
		require.Equal(t, map[string]string{"mem": "2"}, s.etcdData(obj))

		// The read cache was thrown away too: "other" was never committed.
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			_, ok, err := st.Get(ctx, "other")
			assert.NoError(t, err)
			assert.False(t, ok)
			return nil
		})
	})

	t.Run("QueuedCallsFail", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "gate-queue"
		require.Equal(t, "1", string(s.mustRun(obj, inc)))
		runs := s.factoryRuns.Load()
		before := s.written()

		started, release := make(chan struct{}), make(chan struct{})
		type reply struct {
			res node.Result
			err error
		}
		first := make(chan reply, 1)
		go func() {
			res, err := s.invoke(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
				close(started)
				<-release
				return inc(ctx, o)
			})
			first <- reply{res, err}
		}()
		<-started
		const queued = 3
		rest := make(chan reply, queued)
		var ran atomic.Int32
		for i := 0; i < queued; i++ {
			go func() {
				res, err := s.invoke(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
					ran.Add(1)
					return inc(ctx, o)
				})
				rest <- reply{res, err}
			}()
		}
		s.h.eventually(func() bool { return s.queued(obj) == queued }, "calls never queued")

		s.setCommitHook(func([]clientv3.Op) error { return errInjected })
		close(release)
		r := <-first
		require.ErrorIs(t, r.err, durable.ErrCommitUnknown)
		require.Nil(t, r.res.Payload)
		for i := 0; i < queued; i++ {
			r := <-rest
			require.Error(t, r.err, "a call queued behind a failed commit succeeded")
			require.ErrorIs(t, r.err, durable.ErrObjectReset)
			require.NotErrorIs(t, r.err, durable.ErrCommitUnknown, "a call that never ran is not of unknown outcome")
			require.Equal(t, "OBJECT_RESET", client.Detail(node.ToStatus(r.err, "")).GetReason())
			require.True(t, client.Retryable(node.ToStatus(r.err, "")), "a call that never ran is safe to retry")
			require.Nil(t, r.res.Payload)
		}
		s.setCommitHook(nil)
		// With pipelining the calls behind the failed one may have run while
		// its commit was in the air (ran counts them); their replies failed
		// all the same, and nothing of theirs was written.
		t.Logf("%d of the %d queued calls ran before the failure was known", ran.Load(), queued)
		require.Equal(t, before, s.written())

		require.Equal(t, "2", string(s.mustRun(obj, inc)))
		require.Equal(t, runs+1, s.factoryRuns.Load())
	})

	t.Run("SyncFailureFailsTheEvent", func(t *testing.T) {
		// A handler that swallows a failed Sync still fails: its writes are
		// in an unknown state.
		s := newStoreT(t, nil)
		const obj = "gate-sync"
		require.Equal(t, "1", string(s.mustRun(obj, inc)))
		runs := s.factoryRuns.Load()
		before := s.written()
		s.setCommitHook(func([]clientv3.Op) error { return errInjected })
		var syncErr error
		res, err := s.invoke(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			if _, err := inc(ctx, o); err != nil {
				return nil, err
			}
			syncErr = o.S().Sync(ctx)
			return []byte("swallowed"), nil
		})
		s.setCommitHook(nil)
		require.ErrorIs(t, syncErr, durable.ErrCommitUnknown)
		require.ErrorIs(t, err, durable.ErrCommitUnknown)
		require.Nil(t, res.Payload)
		require.Equal(t, before, s.written())
		require.Equal(t, "2", string(s.mustRun(obj, inc)))
		require.Equal(t, runs+1, s.factoryRuns.Load())
	})

	t.Run("ReadOnlyEventDoesNotCommit", func(t *testing.T) {
		// An event without writes has nothing to make durable: a broken
		// commit path does not fail it.
		s := newStoreT(t, nil)
		const obj = "gate-read"
		s.put(obj, map[string]string{"k": "v"})
		var hookCalls atomic.Int32
		s.setCommitHook(func([]clientv3.Op) error { hookCalls.Add(1); return errInjected })
		out, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			v, _, err := o.S().Get(ctx, "k")
			return v, err
		})
		s.setCommitHook(nil)
		require.NoError(t, err)
		require.Equal(t, "v", string(out))
		require.Zero(t, hookCalls.Load())
	})
}

// ---------------------------------------------------------------------------
// Fencing
// ---------------------------------------------------------------------------

func TestStorageFencing(t *testing.T) {
	// The owner key is deleted while an event runs: the node drops the
	// partition and claims it again under a new token. The event's commit,
	// fenced by the old token, must fail and write nothing; Invoke then
	// retries the call (nothing was applied) on a fresh instance under the
	// new tenure.
	for _, viaSync := range []bool{false, true} {
		name := "OwnerDeletedDuringEvent"
		if viaSync {
			name += "/Sync"
		}
		t.Run(name, func(t *testing.T) {
			s := newStoreT(t, nil)
			const obj = "fence"
			require.Equal(t, "1", string(s.mustRun(obj, inc)))
			p := s.part(obj)
			old := s.h.n().Token(p)
			require.NotZero(t, old)
			runs := s.factoryRuns.Load()
			before := s.written()
			ctx, cancel := etcdCtx()
			defer cancel()
			memBefore, err := s.etcdGet(ctx, s.dataKey(obj, "mem"))
			require.NoError(t, err)
			require.Len(t, memBefore.Kvs, 1)

			started, release := make(chan struct{}), make(chan struct{})
			var attempts atomic.Int32
			var firstSyncErr error
			var firstOut []byte
			type reply struct {
				out []byte
				err error
			}
			done := make(chan reply, 1)
			go func() {
				out, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
					attempt := attempts.Add(1)
					if attempt == 1 {
						close(started)
						<-release
					}
					out, err := inc(ctx, o)
					if err != nil {
						return nil, err
					}
					if err := o.S().Put(ctx, "zombie", []byte(fmt.Sprint("attempt ", attempt))); err != nil {
						return nil, err
					}
					if viaSync && attempt == 1 {
						firstOut = out
						firstSyncErr = o.S().Sync(ctx)
						return out, firstSyncErr
					}
					return out, nil
				})
				done <- reply{out, err}
			}()
			<-started

			_, err = s.h.Client.Delete(ctx, s.h.n().Keys().Owner(p))
			require.NoError(t, err)
			s.h.eventually(func() bool { tok := s.h.n().Token(p); return tok != 0 && tok != old }, "partition never re-claimed")
			newTok := s.h.n().Token(p)

			close(release)
			r := <-done
			if viaSync {
				require.ErrorIs(t, firstSyncErr, durable.ErrOwnershipLost, "Sync under a lost tenure")
				require.Equal(t, "2", string(firstOut))
			}
			// The call was retried on a fresh instance: the stale one would
			// have answered 3.
			require.NoError(t, r.err)
			require.Equal(t, "2", string(r.out))
			require.EqualValues(t, 2, attempts.Load(), "the fenced-out call was not retried exactly once")
			require.Equal(t, runs+1, s.factoryRuns.Load(), "the factory did not run again")

			// Nothing was written under the old token: every key that
			// changed was written after the new tenure began, and the data
			// keys were written once, by the retry.
			after := s.written()
			for k, rev := range after {
				if rev != before[k] {
					require.Greater(t, rev, newTok, "key %q written before the new tenure", k)
				}
			}
			mem, err := s.etcdGet(ctx, s.dataKey(obj, "mem"))
			require.NoError(t, err)
			require.Equal(t, "2", string(mem.Kvs[0].Value))
			require.Equal(t, memBefore.Kvs[0].Version+1, mem.Kvs[0].Version, "mem written more than once")
			require.Greater(t, mem.Kvs[0].ModRevision, newTok)
			zombie, err := s.etcdGet(ctx, s.dataKey(obj, "zombie"))
			require.NoError(t, err)
			require.Len(t, zombie.Kvs, 1)
			require.Equal(t, "attempt 2", string(zombie.Kvs[0].Value))
			require.EqualValues(t, 1, zombie.Kvs[0].Version, "the stale attempt's write reached etcd")
			require.Greater(t, zombie.Kvs[0].CreateRevision, newTok)
		})
	}

	for _, bcw := range []bool{false, true} {
		t.Run(fmt.Sprintf("OwnerDeletedCancelsTheRunningHandler/blockConcurrencyWhile=%v", bcw), func(t *testing.T) {
			// A handler running when its tenure ends has its context
			// cancelled with ErrOwnershipLost (nothing it does can commit),
			// also after a BlockConcurrencyWhile of its own returned; the
			// call follows the partition and runs again on the next tenure.
			s := newStoreT(t, nil)
			const obj = "fence-abort"
			s.mustRun(obj, inc) // active
			p := s.part(obj)
			old := s.h.n().Token(p)
			started := make(chan struct{})
			var first atomic.Bool
			var cause error
			res := make(chan error, 1)
			go func() {
				_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
					if first.CompareAndSwap(false, true) {
						if bcw {
							if err := o.st.BlockConcurrencyWhile(ctx, func(context.Context) error { return nil }); err != nil {
								return nil, err
							}
						}
						close(started)
						select {
						case <-ctx.Done():
							cause = context.Cause(ctx)
							return nil, ctx.Err()
						case <-time.After(30 * time.Second):
							return nil, errors.New("the handler's context was never cancelled")
						}
					}
					return inc(ctx, o)
				})
				res <- err
			}()
			<-started
			ctx, cancel := etcdCtx()
			defer cancel()
			_, err := s.h.Client.Delete(ctx, s.h.n().Keys().Owner(p))
			require.NoError(t, err)
			require.NoError(t, <-res, "the call did not follow the partition")
			require.ErrorIs(t, cause, durable.ErrOwnershipLost, "the handler's context was not cancelled by the loss")
			require.NotEqual(t, old, s.h.n().Token(p))
			require.Equal(t, map[string]string{"mem": "2"}, s.etcdData(obj), "the aborted run wrote nothing; the retry did")
		})
	}

	t.Run("OwnerDeletedWhileIdle", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "fence-idle"
		require.Equal(t, "1", string(s.mustRun(obj, inc)))
		p := s.part(obj)
		old := s.h.n().Token(p)
		runs := s.factoryRuns.Load()
		require.Equal(t, 1, s.h.n().ActiveObjects())

		ctx, cancel := etcdCtx()
		defer cancel()
		_, err := s.h.Client.Delete(ctx, s.h.n().Keys().Owner(p))
		require.NoError(t, err)
		s.h.eventually(func() bool { tok := s.h.n().Token(p); return tok != 0 && tok != old }, "partition never re-claimed")
		newTok := s.h.n().Token(p)
		s.h.eventually(func() bool { return s.h.n().ActiveObjects() == 0 }, "object of the lost partition still active")

		require.Equal(t, "2", string(s.mustRun(obj, inc)))
		require.Equal(t, runs+1, s.factoryRuns.Load())
		resp, err := s.etcdGet(ctx, s.dataKey(obj, "mem"))
		require.NoError(t, err)
		require.Greater(t, resp.Kvs[0].ModRevision, newTok)
	})

	t.Run("CommitWithStaleToken", func(t *testing.T) {
		s := newStoreT(t, nil)
		n, c := s.h.n(), s.h.Agent(0).Committer()
		const p = 1
		tok := n.Token(p)
		require.NotZero(t, tok)
		key := n.Keys().DataPrefix(p, tClass, "direct") + "k"
		ctx, cancel := etcdCtx()
		defer cancel()
		for _, stale := range []int64{tok - 1, tok + 1, tok + 1000, 1} {
			err := commitDirect(c, p, stale, []clientv3.Op{clientv3.OpPut(key, "stale")})
			require.ErrorIs(t, err, durable.ErrOwnershipLost, "token %d", stale)
			resp, err := s.etcdGet(ctx, key)
			require.NoError(t, err)
			require.Empty(t, resp.Kvs, "a commit under stale token %d was applied", stale)
		}
		// Another partition's token does not fence this one either.
		other := n.Token(2)
		require.NotZero(t, other)
		require.ErrorIs(t, commitDirect(c, p, other, []clientv3.Op{clientv3.OpPut(key, "stale")}), durable.ErrOwnershipLost)

		// The current token commits, and the stale attempts did not make
		// the node give the partition up.
		require.NoError(t, commitDirect(c, p, tok, []clientv3.Op{clientv3.OpPut(key, "fresh")}))
		resp, err := s.etcdGet(ctx, key)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
		require.Equal(t, "fresh", string(resp.Kvs[0].Value))
		require.Equal(t, tok, n.Token(p))
	})
}

// ---------------------------------------------------------------------------
// Sync
// ---------------------------------------------------------------------------

func TestStorageSync(t *testing.T) {
	s := newStoreT(t, nil)

	inEtcd := func(ctx context.Context, t *testing.T, obj, key string) (string, bool) {
		resp, err := s.etcdGet(ctx, s.dataKey(obj, key))
		if !assert.NoError(t, err) || len(resp.Kvs) == 0 {
			return "", false
		}
		return string(resp.Kvs[0].Value), true
	}

	t.Run("DurableBeforeEventEnds", func(t *testing.T) {
		const obj = "sync"
		s.put(obj, map[string]string{"old": "1"})
		var syncedRev int64
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.Put(ctx, "a", []byte("1")))
			_, err := st.Delete(ctx, "old")
			assert.NoError(t, err)
			_, ok := inEtcd(ctx, t, obj, "a")
			assert.False(t, ok, "write durable before Sync")

			assert.NoError(t, st.Sync(ctx))
			v, ok := inEtcd(ctx, t, obj, "a")
			assert.True(t, ok, "write not durable after Sync")
			assert.Equal(t, "1", v)
			if resp, err := s.etcdGet(ctx, s.dataKey(obj, "a")); assert.NoError(t, err) && len(resp.Kvs) == 1 {
				syncedRev = resp.Kvs[0].ModRevision
			}
			_, ok = inEtcd(ctx, t, obj, "old")
			assert.False(t, ok, "delete not durable after Sync")

			// Reads after Sync still see everything.
			got, ok, err := st.Get(ctx, "a")
			assert.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "1", string(got))
			_, ok, _ = st.Get(ctx, "old")
			assert.False(t, ok)

			assert.NoError(t, st.Put(ctx, "b", []byte("2")))
			_, ok = inEtcd(ctx, t, obj, "b")
			assert.False(t, ok)
			assert.NoError(t, st.Sync(ctx))
			assert.NoError(t, st.Sync(ctx), "Sync with nothing new")
			_, ok = inEtcd(ctx, t, obj, "b")
			assert.True(t, ok)
			assert.NoError(t, st.Put(ctx, "c", []byte("3")))
			return nil
		})
		require.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3"}, s.etcdData(obj))
		// A synced write is committed once, not again when the event ends.
		require.Equal(t, syncedRev, s.written()[s.dataKey(obj, "a")])
	})

	t.Run("NothingToSync", func(t *testing.T) {
		const obj = "sync-empty"
		s.put(obj, map[string]string{"k": "v"})
		before := s.written()
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error { return st.Sync(ctx) })
		require.Equal(t, before, s.written())
	})

	t.Run("SyncedWritesSurviveLaterFailure", func(t *testing.T) {
		const obj = "sync-fail"
		_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			assert.NoError(t, o.S().Put(ctx, "synced", []byte("1")))
			assert.NoError(t, o.S().Sync(ctx))
			assert.NoError(t, o.S().Put(ctx, "unsynced", []byte("2")))
			return nil, errors.New("fail after sync")
		})
		var oe *durable.ObjectError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, map[string]string{"synced": "1"}, s.etcdData(obj))
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			m, err := st.GetMany(ctx, []string{"synced", "unsynced"})
			assert.NoError(t, err)
			assert.Equal(t, map[string]string{"synced": "1"}, stringMap(m))
			return nil
		})
	})

	t.Run("SyncedWritesOfAFailedAlarmRunStandForItsRetry", func(t *testing.T) {
		const obj = "sync-alarm-fail"
		var runs atomic.Int32
		retrySaw := make(chan map[string]string, 1)
		s.mu.Lock()
		s.onAlarm = func(ctx context.Context, o *tObj) error {
			if runs.Add(1) == 1 {
				assert.NoError(t, o.S().Put(ctx, "a", []byte("synced")))
				assert.NoError(t, o.S().Sync(ctx))
				assert.NoError(t, o.S().Put(ctx, "b", []byte("lost")))
				return errors.New("fail after sync")
			}
			m, err := o.S().GetMany(ctx, []string{"a", "b"})
			assert.NoError(t, err)
			retrySaw <- stringMap(m)
			return nil
		}
		s.mu.Unlock()
		t.Cleanup(func() { s.mu.Lock(); s.onAlarm = nil; s.mu.Unlock() })
		due := s.h.Clock.Now().Add(time.Second)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, due) })
		s.h.advance(time.Second)
		s.h.eventually(func() bool { return runs.Load() == 1 && len(s.etcdData(obj)) == 1 }, "the first run never synced")
		s.h.WaitQuiet()
		require.Equal(t, map[string]string{"a": "synced"}, s.etcdData(obj))
		s.h.advance(2 * time.Second) // the first retry (no jitter)
		require.Equal(t, map[string]string{"a": "synced"}, <-retrySaw, "the retry sees the synced write, not the later one")
	})

	t.Run("AfterDeleteAll", func(t *testing.T) {
		const obj = "sync-clear"
		s.put(obj, map[string]string{"x": "1", "y": "2"})
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.DeleteAll(ctx))
			assert.NoError(t, st.Put(ctx, "z", []byte("3")))
			assert.NoError(t, st.Sync(ctx))
			resp, err := s.h.Client.Get(ctx, s.dataPrefix(obj), clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if assert.NoError(t, err) && assert.Len(t, resp.Kvs, 1) {
				assert.Equal(t, s.dataKey(obj, "z"), string(resp.Kvs[0].Key))
			}
			// After the synced DeleteAll, the event is no longer "cleared":
			// later writes merge with the committed state again.
			assert.NoError(t, st.Put(ctx, "w", []byte("4")))
			l, err := st.List(ctx, durable.ListOptions{})
			assert.NoError(t, err)
			assert.Equal(t, []string{"w", "z"}, kvKeys(l))
			return nil
		})
		require.Equal(t, map[string]string{"w": "4", "z": "3"}, s.etcdData(obj))
	})

	t.Run("Alarm", func(t *testing.T) {
		const obj = "sync-alarm"
		at := s.h.Clock.Now().Add(time.Hour)
		s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
			assert.NoError(t, st.SetAlarm(ctx, at))
			assert.NoError(t, st.Sync(ctx))
			resp, err := s.etcdGet(ctx, s.alarmKey(obj))
			if assert.NoError(t, err) {
				assert.Len(t, resp.Kvs, 1, "alarm not durable after Sync")
			}
			return nil
		})
		ctx, cancel := etcdCtx()
		defer cancel()
		resp, err := s.etcdGet(ctx, s.alarmKey(obj))
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
	})
}

// ---------------------------------------------------------------------------
// Lifecycle: restart and eviction
// ---------------------------------------------------------------------------

func TestStorageSurvivesRestart(t *testing.T) {
	s := newStoreT(t, nil)
	big := bytes.Repeat([]byte{0xab}, durable.MaxValueBytes)
	s.mustDo("r1", func(ctx context.Context, st durable.Storage) error {
		return st.PutMany(ctx, map[string][]byte{"a": []byte("1"), "\x00bin": {0, 1, 0xff}, "big": big, "gone": []byte("x")})
	})
	s.mustDo("r1", func(ctx context.Context, st durable.Storage) error {
		_, err := st.Delete(ctx, "gone")
		return err
	})
	s.mustDo("r2", func(ctx context.Context, st durable.Storage) error {
		if err := st.Put(ctx, "old", []byte("x")); err != nil {
			return err
		}
		if err := st.Sync(ctx); err != nil {
			return err
		}
		if err := st.DeleteAll(ctx); err != nil {
			return err
		}
		return st.Put(ctx, "new", []byte("y"))
	})
	require.Equal(t, "1", string(s.mustRun("r3", inc)))
	runs := s.factoryRuns.Load()

	s.h.restart()

	s.mustDo("r1", func(ctx context.Context, st durable.Storage) error {
		l, err := st.List(ctx, durable.ListOptions{})
		assert.NoError(t, err)
		assert.Equal(t, []durable.KV{{Key: "\x00bin", Value: []byte{0, 1, 0xff}}, {Key: "a", Value: []byte("1")}, {Key: "big", Value: big}}, l)
		return nil
	})
	s.mustDo("r2", func(ctx context.Context, st durable.Storage) error {
		l, err := st.List(ctx, durable.ListOptions{})
		assert.NoError(t, err)
		assert.Equal(t, []durable.KV{{Key: "new", Value: []byte("y")}}, l)
		return nil
	})
	require.Equal(t, "2", string(s.mustRun("r3", inc)))
	require.Equal(t, runs+3, s.factoryRuns.Load(), "every object is activated again after a restart")
}

func TestStorageEviction(t *testing.T) {
	const idle = 10 * time.Second
	s := newStoreT(t, func(cfg *node.Config) { cfg.IdleTimeout = idle })
	const obj = "evict"
	require.Equal(t, "1", string(s.mustRun(obj, inc)))
	s.put(obj, map[string]string{"k": "v"})
	require.EqualValues(t, 1, s.factoryRuns.Load())
	require.Equal(t, 1, s.h.n().ActiveObjects())

	// Events keep the object alive: short of the idle timeout after the
	// last one, it is still the same instance.
	s.h.advance(idle - time.Millisecond)
	require.Equal(t, "2", string(s.mustRun(obj, inc)))
	require.EqualValues(t, 1, s.factoryRuns.Load(), "evicted before its idle timeout")

	// Idle long enough, it leaves memory. (The timer is re-armed after each
	// event on the object's goroutine, so keep advancing until it fires.)
	s.h.eventually(func() bool {
		s.h.advance(time.Second)
		return s.h.n().ActiveObjects() == 0
	}, "object never evicted")

	// The next call re-runs the factory; storage is intact.
	require.Equal(t, "3", string(s.mustRun(obj, inc)))
	require.EqualValues(t, 2, s.factoryRuns.Load())
	require.Equal(t, 1, s.h.n().ActiveObjects())
	s.mustDo(obj, func(ctx context.Context, st durable.Storage) error {
		v, ok, err := st.Get(ctx, "k")
		assert.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, "v", string(v))
		return nil
	})
	require.Equal(t, map[string]string{"k": "v", "mem": "3"}, s.etcdData(obj))
}

// commitDirect sends ops fenced by (p, token) through the node's group
// commit and waits for the outcome.
func commitDirect(c *commit.Committer, p int, token int64, ops []clientv3.Op) error {
	res := make(chan error, 1)
	c.Submit(&commit.Request{Partition: p, Token: token, Ops: ops, Done: func(err error) { res <- err }})
	return <-res
}

// TestAnObjectThatOnlyRunsPeriodicAlarmsStaysParked: an object activated
// by its alarm, which re-arms it every 5 s, stays parked between its runs
// (its next alarm is due within the idle timeout), so its factory runs once
// for all of them; it was evicted a second after each run, and every run
// paid an activation (issue #17). Once it stops re-arming, it leaves
// memory a second after its last run; while the table is crowded, at once.
func TestAnObjectThatOnlyRunsPeriodicAlarmsStaysParked(t *testing.T) {
	const period = 5 * time.Second
	s := newStoreT(t, func(cfg *node.Config) { cfg.IdleTimeout = time.Minute; cfg.MaxActiveObjects = 8 })
	arm := func(name string) {
		due := s.h.Clock.Now().Add(period)
		s.mustDo(name, func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, due) })
	}
	// waitRun waits until the node has ended n alarm runs (counted from
	// base) and the object has parked: WaitQuiet alone passes while a
	// factory or handler runs.
	ended := func() float64 {
		return metrics.Value(s.h.n().Config().Metrics.AlarmRuns.WithLabelValues(tClass, "success"))
	}
	waitRun := func(base float64, n int) {
		t.Helper()
		s.h.eventually(func() bool { return ended() >= base+float64(n) }, "alarm run %d did not end", n)
		s.h.WaitQuiet()
	}
	arm("ticker")
	s.h.restart() // nothing active: the alarm activates the object, which then only runs alarms
	var runs atomic.Int32
	s.mu.Lock()
	s.onAlarm = func(ctx context.Context, o *tObj) error {
		if o.st.Name() == "ticker" && runs.Add(1) < 3 {
			return o.S().SetAlarm(ctx, o.st.Clock().Now().Add(period))
		}
		return nil
	}
	s.mu.Unlock()
	before, base := s.factoryRuns.Load(), ended()
	for i := 1; i <= 3; i++ {
		// Past alarmOnlyIdle after the last run, short of the next alarm.
		s.h.advance(2 * time.Second)
		s.h.WaitQuiet()
		s.h.n().Sweep()
		if i > 1 {
			require.Equal(t, 1, s.h.n().ActiveObjects(), "the object left memory before its next alarm")
		}
		s.h.advance(period - 2*time.Second)
		waitRun(base, i)
	}
	require.EqualValues(t, before+1, s.factoryRuns.Load(), "the factory ran again for a periodic alarm")

	// No next alarm: it goes a second after its last run.
	s.h.advance(time.Second)
	s.h.n().Sweep()
	require.Equal(t, 0, s.h.n().ActiveObjects(), "the object stayed in memory without a next alarm")

	// A crowded table (6 of 8 objects) lets a parked object that only runs
	// alarms go at once, even with its next alarm due soon.
	arm("ticker")
	s.h.restart()
	runs.Store(0)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		s.mustRun(name, inc)
	}
	base = ended()
	s.h.advance(period)
	waitRun(base, 1)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		s.mustRun(name, inc) // just invoked: they stay even in a crowded table
	}
	s.h.n().Sweep() // the node's sweeper may have looked already
	require.Equal(t, 5, s.h.n().ActiveObjects(), "a crowded table kept an object that only runs alarms")
}

// TestACrowdedTableLetsIdleInvokedObjectsGoEarly: objects that were invoked
// stay for the idle timeout, unless the table is crowded (3/4 of
// MaxActiveObjects): then a second idle is enough, so alarms and calls of
// objects not in memory do not wait a whole idle timeout for room.
func TestACrowdedTableLetsIdleInvokedObjectsGoEarly(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.IdleTimeout = time.Minute; cfg.MaxActiveObjects = 8 })
	names := []string{"a", "b", "c", "d", "e", "f"}
	active := func(name string) bool {
		ok, _, _ := s.h.n().Mailbox(tClass, s.id(name))
		return ok
	}
	for _, name := range names[:5] {
		s.mustRun(name, inc)
	}
	s.h.advance(2 * time.Second)
	s.h.WaitQuiet()
	s.h.n().Sweep()
	require.Equal(t, 5, s.h.n().ActiveObjects(), "an uncrowded table let invoked objects go before their idle timeout")

	// 6 of 8: crowded. The five idle for 2 s go; "f", just invoked, stays,
	// and once they left the table is no longer crowded.
	s.mustRun("f", inc)
	s.h.advance(time.Second / 2)
	s.h.WaitQuiet()
	s.h.n().Sweep()
	s.h.WaitQuiet()
	for _, name := range names[:5] {
		require.False(t, active(name), "a crowded table kept %s, idle for 2 s", name)
	}
	s.h.advance(2 * time.Second)
	s.h.WaitQuiet()
	s.h.n().Sweep()
	require.True(t, active("f"), "an uncrowded table let f go before its idle timeout")
	for _, name := range names {
		want := "2"
		require.Equal(t, want, string(s.mustRun(name, inc)), "%s lost its state when it left memory", name)
	}
}
