package node

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
)

// storageError marks an error of the storage layer itself (etcd unreachable,
// a read cancelled), as opposed to the handler's own. Handlers usually return
// such errors as they are; the runtime then knows the failure was the
// system's and does not count it against alarm retries.
type storageError struct{ err error }

func (e *storageError) Error() string { return "storage: " + e.err.Error() }

// Unwrap makes a storage error both ErrUnavailable and its cause.
func (e *storageError) Unwrap() []error { return []error{durable.ErrUnavailable, e.err} }

// state implements durable.State.
type state struct {
	o *object
	h *storageHandle
}

func (s *state) ID() durable.ID           { return s.o.id }
func (s *state) Name() string             { return s.o.pl.objectName() }
func (s *state) Storage() durable.Storage { return s.h }
func (s *state) Clock() clockwork.Clock   { return s.o.env.clock }
func (s *state) Objects() durable.Objects { return &objectCalls{o: s.o, h: s.h} }

func (s *state) BlockConcurrencyWhile(ctx context.Context, fn func(ctx context.Context) error) error {
	o := s.o
	// Events of an object already run one at a time; what this adds is the
	// 30 s limit and the reset of the object when fn fails.
	_, err, how := o.runHandler(ctx, o.env.cfg.BlockTimeout, func(ctx context.Context) ([]byte, error) {
		return nil, fn(ctx)
	})
	if how == outcomeOK {
		return nil
	}
	broken := fmt.Errorf("%w: BlockConcurrencyWhile: %w", durable.ErrObjectReset, err)
	o.pl.breakEvent(s.h.gen, broken)
	return broken
}

// storageHandle implements durable.Storage for one generation of an object.
type storageHandle struct {
	o   *object
	gen uint64
}

// txLocked returns the event in progress if the handle is still valid.
// Caller holds pipeline.mu.
func (h *storageHandle) txLocked() (*eventTx, error) {
	pl := &h.o.pl
	if pl.gen != h.gen {
		return nil, fmt.Errorf("%w: storage handle of a previous instance", durable.ErrObjectReset)
	}
	if pl.cur == nil || pl.cur.gen != h.gen {
		return nil, durable.ErrNotInEvent
	}
	return pl.cur, nil
}

// lock takes the pipeline's lock and returns the event in progress.
func (h *storageHandle) lock() (*pipeline, *eventTx, error) {
	pl := &h.o.pl
	pl.mu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		pl.mu.Unlock()
		return nil, nil, err
	}
	return pl, tx, nil
}

func checkKey(key string) error {
	if key == "" {
		return durable.Invalidf("key must not be empty")
	}
	if len(key) > durable.MaxKeyBytes {
		return durable.Invalidf("key of %d bytes exceeds the limit of %d", len(key), durable.MaxKeyBytes)
	}
	return nil
}

func checkValue(key string, v []byte) error {
	if len(v) > durable.MaxValueBytes {
		return durable.Invalidf("value of key %.40q is %d bytes, over the limit of %d", key, len(v), durable.MaxValueBytes)
	}
	return nil
}

func checkKeys(keys []string) error {
	if len(keys) > durable.MaxKeysPerOp {
		return durable.Invalidf("%d keys in one call exceed the limit of %d", len(keys), durable.MaxKeysPerOp)
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	return nil
}

func (h *storageHandle) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := checkKey(key); err != nil {
		return nil, false, err
	}
	m, err := h.getMany(ctx, []string{key})
	if err != nil {
		return nil, false, err
	}
	v, ok := m[key]
	return v, ok, nil
}

func (h *storageHandle) GetMany(ctx context.Context, keys []string) (map[string][]byte, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	return h.getMany(ctx, keys)
}

// getMany resolves keys from the event's writes, then the pending stages and
// the committed cache, then etcd (one group read for all misses).
func (h *storageHandle) getMany(ctx context.Context, keys []string) (map[string][]byte, error) {
	pl, tx, err := h.lock()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	var misses []string
	for _, k := range keys {
		if v, ok, decided := pl.lookupLocked(tx, k); decided {
			if ok {
				out[k] = clone(v)
			}
			continue
		}
		misses = append(misses, k)
	}
	pl.mu.Unlock()
	if len(misses) == 0 {
		return out, nil
	}
	full := make([]string, len(misses))
	prefix := pl.dataPrefix()
	for i, k := range misses {
		full[i] = prefix + k
	}
	kvs, err := pl.o.env.reads.Get(ctx, full...)
	if err != nil {
		return nil, &storageError{err}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if _, err := h.txLocked(); err != nil {
		return nil, err
	}
	if pl.cache.len()+len(misses) > maxCacheEntries {
		pl.cache = nil
	}
	// No pending stage holds a missed key (only this event could have
	// staged one since), so etcd's value is the committed one.
	for i, k := range misses {
		if kvs[i] == nil {
			pl.cacheLocked(k, cacheEntry{})
			continue
		}
		pl.cacheLocked(k, cacheEntry{val: kvs[i].Value, ok: true})
		out[k] = clone(kvs[i].Value)
	}
	return out, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte(nil), b...)
}

func (h *storageHandle) Put(ctx context.Context, key string, value []byte) error {
	return h.PutMany(ctx, map[string][]byte{key: value})
}

func (h *storageHandle) PutMany(ctx context.Context, entries map[string][]byte) error {
	if len(entries) > durable.MaxKeysPerOp {
		return durable.Invalidf("%d keys in one call exceed the limit of %d", len(entries), durable.MaxKeysPerOp)
	}
	for k, v := range entries {
		if err := checkKey(k); err != nil {
			return err
		}
		if err := checkValue(k, v); err != nil {
			return err
		}
	}
	pl, tx, err := h.lock()
	if err != nil {
		return err
	}
	defer pl.mu.Unlock()
	for k, v := range entries {
		tx.writes[k] = write{val: clone(v)}
	}
	return nil
}

func (h *storageHandle) Delete(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	n, err := h.deleteMany(ctx, []string{key})
	return n == 1, err
}

func (h *storageHandle) DeleteMany(ctx context.Context, keys []string) (int, error) {
	if err := checkKeys(keys); err != nil {
		return 0, err
	}
	return h.deleteMany(ctx, keys)
}

func (h *storageHandle) deleteMany(ctx context.Context, keys []string) (int, error) {
	existing, err := h.getMany(ctx, keys)
	if err != nil {
		return 0, err
	}
	pl, tx, err := h.lock()
	if err != nil {
		return 0, err
	}
	defer pl.mu.Unlock()
	n := 0
	seen := map[string]bool{}
	for _, k := range keys {
		if _, ok := existing[k]; ok && !seen[k] {
			n++
		}
		seen[k] = true
		tx.writes[k] = write{del: true}
	}
	return n, nil
}

func (h *storageHandle) DeleteAll(ctx context.Context) error {
	pl, tx, err := h.lock()
	if err != nil {
		return err
	}
	defer pl.mu.Unlock()
	tx.cleared = true
	tx.writes = map[string]write{}
	if h.o.class.HasAlarm { // a class without a handler has no alarm
		tx.alarmTouched, tx.alarmDue = true, time.Time{}
	}
	return nil
}

// listRange turns options into a half-open range of user keys [lo, hi); hi ""
// means unbounded.
func listRange(opts durable.ListOptions) (lo, hi string, err error) {
	if opts.Start != "" && opts.StartAfter != "" {
		return "", "", durable.Invalidf("list: Start and StartAfter are mutually exclusive")
	}
	if opts.Limit < 0 {
		return "", "", durable.Invalidf("list: Limit %d is negative (0 means no limit)", opts.Limit)
	}
	for _, k := range []string{opts.Start, opts.StartAfter, opts.End, opts.Prefix} {
		if len(k) > durable.MaxKeyBytes {
			return "", "", durable.Invalidf("list: key of %d bytes exceeds the limit of %d", len(k), durable.MaxKeyBytes)
		}
	}
	lo = opts.Start
	if opts.StartAfter != "" {
		lo = opts.StartAfter + "\x00"
	}
	hi = opts.End
	if opts.Prefix != "" {
		if opts.Prefix > lo {
			lo = opts.Prefix
		}
		// A prefix of only 0xff bytes has no end within the object's keys
		// (PrefixEnd then returns etcd's "\x00", "whole key space"): it
		// bounds nothing from above.
		if pe := keyspace.PrefixEnd(opts.Prefix); pe != "\x00" && (hi == "" || pe < hi) {
			hi = pe
		}
	}
	return lo, hi, nil
}

func inRange(k, lo, hi string) bool { return k >= lo && (hi == "" || k < hi) }

func (h *storageHandle) List(ctx context.Context, opts durable.ListOptions) ([]durable.KV, error) {
	lo, hi, err := listRange(opts)
	if err != nil {
		return nil, err
	}
	pl, tx, err := h.lock()
	if err != nil {
		return nil, err
	}
	merged := map[string][]byte{}
	// The layers over the committed state, oldest first: pending stages,
	// then the event's buffer. A layer that cleared everything hides etcd
	// and the layers below it.
	type layer struct {
		writes  map[string]write
		cleared bool
	}
	layers := make([]layer, 0, 3)
	for _, s := range [2]*stage{pl.flight, pl.next} {
		if s != nil {
			layers = append(layers, layer{s.writes, s.cleared})
		}
	}
	layers = append(layers, layer{tx.writes, tx.cleared})
	cleared := false
	for i := len(layers) - 1; i >= 0; i-- {
		if layers[i].cleared {
			layers, cleared = layers[i:], true
			break
		}
	}
	// Copy what is in range: the maps change once the lock is released.
	overlay := map[string]write{}
	hidden := 0
	for _, l := range layers {
		for k, w := range l.writes {
			if inRange(k, lo, hi) {
				overlay[k] = w
			}
		}
	}
	for _, w := range overlay {
		if w.del {
			hidden++
		}
	}
	pl.mu.Unlock()

	if !cleared && (hi == "" || lo < hi) {
		prefix := pl.dataPrefix()
		end := keyspace.PrefixEnd(prefix)
		if hi != "" {
			end = prefix + hi
		}
		ropts := []clientv3.OpOption{clientv3.WithRange(end)}
		if opts.Limit > 0 {
			// Buffered deletions can hide at most `hidden` of the stored keys.
			ropts = append(ropts, clientv3.WithLimit(int64(opts.Limit+hidden)))
		}
		if opts.Reverse {
			ropts = append(ropts, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		}
		resp, err := pl.o.env.kv.Get(ctx, prefix+lo, ropts...)
		if err != nil {
			return nil, &storageError{err}
		}
		for _, kv := range resp.Kvs {
			merged[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
		}
		pl.mu.Lock()
		_, err = h.txLocked()
		pl.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	for k, w := range overlay {
		if w.del {
			delete(merged, k)
		} else {
			merged[k] = w.val
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if opts.Reverse {
		for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	if opts.Limit > 0 && len(keys) > opts.Limit {
		keys = keys[:opts.Limit]
	}
	out := make([]durable.KV, len(keys))
	for i, k := range keys {
		out[i] = durable.KV{Key: k, Value: clone(merged[k])}
	}
	return out, nil
}

func (h *storageHandle) Transaction(ctx context.Context, fn func(tx durable.Storage) error) error {
	pl, tx, err := h.lock()
	if err != nil {
		return err
	}
	saved := tx.snapshot()
	tx.inTransaction++
	pl.mu.Unlock()
	err = fn(h)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	tx.inTransaction--
	if err != nil {
		if cur, err2 := h.txLocked(); err2 == nil && cur == tx {
			tx.writes, tx.cleared = saved.writes, saved.cleared
			tx.alarmTouched, tx.alarmDue = saved.alarmTouched, saved.alarmDue
		}
		return err
	}
	return nil
}

func (h *storageHandle) Sync(ctx context.Context) error {
	pl, tx, err := h.lock()
	if err != nil {
		return err
	}
	if tx.inTransaction > 0 {
		// What Sync makes durable stands whatever follows: inside a
		// transaction that would break its all-or-nothing.
		pl.mu.Unlock()
		return durable.ErrSyncInTransaction
	}
	// The writes so far leave the buffer for a stage of their own.
	part := *tx
	tx.writes, tx.cleared = map[string]write{}, false
	var alarm alarmChange
	if tx.alarmTouched {
		alarm = alarmChange{set: true, record: pl.freshRecordLocked(tx.alarmDue)}
	}
	pl.mu.Unlock()
	if err := pl.stageAndWait(eventCommit{tx: &part, alarm: alarm}); err != nil {
		// The writes of the event are now in an unknown or failed state; the
		// whole event must fail.
		pl.mu.Lock()
		if tx.broken == nil {
			tx.broken = err
		}
		pl.mu.Unlock()
		return err
	}
	return nil
}

func (h *storageHandle) GetAlarm(ctx context.Context) (time.Time, bool, error) {
	pl, tx, err := h.lock()
	if err != nil {
		return time.Time{}, false, err
	}
	switch {
	case tx.alarmTouched:
		due := tx.alarmDue
		pl.mu.Unlock()
		return due, !due.IsZero(), nil
	case tx.inAlarm:
		pl.mu.Unlock()
		return time.Time{}, false, nil
	}
	pl.mu.Unlock()
	rec, err := pl.loadAlarm(ctx)
	if err != nil || rec == nil {
		return time.Time{}, false, err
	}
	return rec.Scheduled, true, nil
}

func (h *storageHandle) SetAlarm(ctx context.Context, t time.Time) error {
	if t.IsZero() {
		return durable.Invalidf("alarm time must not be zero")
	}
	if !h.o.class.HasAlarm {
		return fmt.Errorf("%w: %q", durable.ErrNoAlarmHandler, h.o.class.Name)
	}
	due := alarmstore.CeilMillis(t)
	if due.After(keyspace.MaxTime) {
		// The index key could not hold it: it would sort before earlier
		// alarms (or, clamped, fire at the wrong time).
		return durable.Invalidf("alarm time %s is after %s, the latest an alarm can be set for",
			t.UTC().Format(time.RFC3339Nano), keyspace.MaxTime.Format(time.RFC3339))
	}
	return h.touchAlarm(due)
}

func (h *storageHandle) DeleteAlarm(ctx context.Context) error {
	return h.touchAlarm(time.Time{})
}

func (h *storageHandle) touchAlarm(due time.Time) error {
	pl, tx, err := h.lock()
	if err != nil {
		return err
	}
	defer pl.mu.Unlock()
	tx.alarmTouched, tx.alarmDue = true, due
	return nil
}
