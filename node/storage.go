package node

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
)

// write is a buffered write: a value, or a deletion.
type write struct {
	val []byte
	del bool
}

// eventTx buffers the writes of one event (storage and alarm). Guarded by the
// object's smu.
type eventTx struct {
	gen     uint64
	token   int64
	inAlarm bool

	writes  map[string]write // user key → buffered write
	cleared bool             // DeleteAll ran: keys not in writes are gone

	alarmTouched bool      // SetAlarm or DeleteAlarm ran
	alarmDue     time.Time // the alarm set (zero: deleted)

	broken error // BlockConcurrencyWhile or Sync failed: the event must fail
}

func (tx *eventTx) snapshot() *eventTx {
	c := *tx
	c.writes = make(map[string]write, len(tx.writes))
	for k, v := range tx.writes {
		c.writes[k] = v
	}
	return &c
}

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

func (s *state) ID() durable.ID { return s.o.id }
func (s *state) Name() string {
	s.o.smu.Lock()
	defer s.o.smu.Unlock()
	return s.o.name
}
func (s *state) Storage() durable.Storage { return s.h }

func (s *state) BlockConcurrencyWhile(ctx context.Context, fn func(ctx context.Context) error) error {
	o := s.o
	// Events of an object already run one at a time; what this adds is the
	// 30 s limit and the reset of the object when fn fails.
	_, err, how := o.runHandler(ctx, o.n.cfg.BlockTimeout, func(ctx context.Context) ([]byte, error) {
		return nil, fn(ctx)
	})
	if how == outcomeOK {
		return nil
	}
	broken := fmt.Errorf("%w: BlockConcurrencyWhile: %w", durable.ErrObjectReset, err)
	o.smu.Lock()
	if o.cur != nil && o.cur.gen == s.h.gen && o.cur.broken == nil {
		o.cur.broken = broken
	}
	o.smu.Unlock()
	return broken
}

// storageHandle implements durable.Storage for one generation of an object.
type storageHandle struct {
	o   *object
	gen uint64
}

// txLocked returns the event in progress if the handle is still valid.
// Caller holds o.smu.
func (h *storageHandle) txLocked() (*eventTx, error) {
	if h.o.gen != h.gen {
		return nil, fmt.Errorf("%w: storage handle of a previous instance", durable.ErrObjectReset)
	}
	if h.o.cur == nil || h.o.cur.gen != h.gen {
		return nil, durable.ErrNotInEvent
	}
	return h.o.cur, nil
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

func (h *storageHandle) dataKey(key string) string {
	return h.o.n.keys.DataPrefix(h.o.p, h.o.key.class, h.o.key.id) + key
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

// getMany resolves keys from the event's writes, then the object's cache, then
// etcd (one Txn for all misses).
func (h *storageHandle) getMany(ctx context.Context, keys []string) (map[string][]byte, error) {
	o := h.o
	out := make(map[string][]byte, len(keys))
	var misses []string
	o.smu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		o.smu.Unlock()
		return nil, err
	}
	for _, k := range keys {
		if v, ok, decided := o.lookupLocked(tx, k); decided {
			if ok {
				out[k] = clone(v)
			}
			continue
		}
		misses = append(misses, k)
	}
	o.smu.Unlock()
	if len(misses) == 0 {
		return out, nil
	}
	full := make([]string, len(misses))
	for i, k := range misses {
		full[i] = h.dataKey(k)
	}
	kvs, err := o.n.reader.get(ctx, full...)
	if err != nil {
		return nil, &storageError{err}
	}
	o.smu.Lock()
	defer o.smu.Unlock()
	if _, err := h.txLocked(); err != nil {
		return nil, err
	}
	if len(o.cache)+len(misses) > maxCacheEntries {
		o.cache = map[string]cacheEntry{}
	}
	// No pending stage holds a missed key (only this event could have
	// staged one since), so etcd's value is the committed one.
	for i, k := range misses {
		if kvs[i] == nil {
			o.cache[k] = cacheEntry{}
			continue
		}
		o.cache[k] = cacheEntry{val: kvs[i].Value, ok: true}
		out[k] = clone(kvs[i].Value)
	}
	return out, nil
}

// lookupLocked resolves key k from the event's buffer, the pending stages
// (newest first) and the committed cache; decided is false when none of them
// knows k and etcd must be read. Caller holds o.smu.
func (o *object) lookupLocked(tx *eventTx, k string) (val []byte, ok, decided bool) {
	if w, hit := tx.writes[k]; hit {
		return w.val, !w.del, true
	}
	if tx.cleared {
		return nil, false, true
	}
	for _, s := range [2]*stage{o.next, o.flight} {
		if s == nil {
			continue
		}
		if w, hit := s.writes[k]; hit {
			return w.val, !w.del, true
		}
		if s.cleared {
			return nil, false, true
		}
	}
	if c, hit := o.cache[k]; hit {
		return c.val, c.ok, true
	}
	return nil, false, false
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
	h.o.smu.Lock()
	defer h.o.smu.Unlock()
	tx, err := h.txLocked()
	if err != nil {
		return err
	}
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
	h.o.smu.Lock()
	defer h.o.smu.Unlock()
	tx, err := h.txLocked()
	if err != nil {
		return 0, err
	}
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
	h.o.smu.Lock()
	defer h.o.smu.Unlock()
	tx, err := h.txLocked()
	if err != nil {
		return err
	}
	tx.cleared = true
	tx.writes = map[string]write{}
	return nil
}

// listRange turns options into a half-open range of user keys [lo, hi); hi ""
// means unbounded.
func listRange(opts durable.ListOptions) (lo, hi string, err error) {
	if opts.Start != "" && opts.StartAfter != "" {
		return "", "", durable.Invalidf("list: Start and StartAfter are mutually exclusive")
	}
	if opts.Limit < 0 {
		return "", "", durable.Invalidf("list: Limit %d must be positive (0 means no limit)", opts.Limit)
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
	o := h.o
	merged := map[string][]byte{}
	o.smu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		o.smu.Unlock()
		return nil, err
	}
	// The layers over the committed state, oldest first: pending stages,
	// then the event's buffer. A layer that cleared everything hides etcd
	// and the layers below it.
	type layer struct {
		writes  map[string]write
		cleared bool
	}
	layers := make([]layer, 0, 3)
	for _, s := range [2]*stage{o.flight, o.next} {
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
	o.smu.Unlock()

	if !cleared && (hi == "" || lo < hi) {
		prefix := o.n.keys.DataPrefix(o.p, o.key.class, o.key.id)
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
		resp, err := o.n.client.Get(ctx, prefix+lo, ropts...)
		if err != nil {
			return nil, &storageError{err}
		}
		for _, kv := range resp.Kvs {
			merged[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
		}
		o.smu.Lock()
		_, err = h.txLocked()
		o.smu.Unlock()
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
	h.o.smu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		h.o.smu.Unlock()
		return err
	}
	saved := tx.snapshot()
	h.o.smu.Unlock()
	if err := fn(h); err != nil {
		h.o.smu.Lock()
		defer h.o.smu.Unlock()
		if cur, err2 := h.txLocked(); err2 == nil && cur == tx {
			tx.writes, tx.cleared = saved.writes, saved.cleared
			tx.alarmTouched, tx.alarmDue = saved.alarmTouched, saved.alarmDue
		}
		return err
	}
	return nil
}

func (h *storageHandle) Sync(ctx context.Context) error {
	o := h.o
	o.smu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		o.smu.Unlock()
		return err
	}
	// The writes so far leave the buffer for a stage of their own.
	part := *tx
	tx.writes, tx.cleared = map[string]write{}, false
	alarm := alarmState{keep: true}
	if tx.alarmTouched {
		alarm = alarmState{record: o.freshRecordLocked(tx.alarmDue)}
	}
	o.smu.Unlock()
	if err := o.stageAndWait(eventCommit{tx: &part, alarm: alarm}); err != nil {
		// The writes of the event are now in an unknown or failed state; the
		// whole event must fail.
		o.smu.Lock()
		if tx.broken == nil {
			tx.broken = err
		}
		o.smu.Unlock()
		return err
	}
	return nil
}

func (h *storageHandle) GetAlarm(ctx context.Context) (time.Time, bool, error) {
	o := h.o
	o.smu.Lock()
	tx, err := h.txLocked()
	if err != nil {
		o.smu.Unlock()
		return time.Time{}, false, err
	}
	switch {
	case tx.alarmTouched:
		due := tx.alarmDue
		o.smu.Unlock()
		return due, !due.IsZero(), nil
	case tx.inAlarm:
		o.smu.Unlock()
		return time.Time{}, false, nil
	}
	o.smu.Unlock()
	rec, err := o.loadAlarm(ctx)
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
	return h.touchAlarm(ceilMillis(t))
}

func (h *storageHandle) DeleteAlarm(ctx context.Context) error {
	return h.touchAlarm(time.Time{})
}

func (h *storageHandle) touchAlarm(due time.Time) error {
	h.o.smu.Lock()
	defer h.o.smu.Unlock()
	tx, err := h.txLocked()
	if err != nil {
		return err
	}
	tx.alarmTouched, tx.alarmDue = true, due
	return nil
}

// loadAlarm returns the object's alarm as its events see it: the last
// staged change, else the committed record, read once per instance. The
// record is authoritative while the node owns the partition.
func (o *object) loadAlarm(ctx context.Context) (*alarmstore.Record, error) {
	o.smu.Lock()
	if rec, ok := o.knownAlarmLocked(); ok {
		o.smu.Unlock()
		return rec, nil
	}
	gen := o.gen
	o.smu.Unlock()
	kvs, err := o.n.reader.get(ctx, o.n.keys.Alarm(o.p, o.key.class, o.key.id))
	if err != nil {
		return nil, &storageError{err}
	}
	var rec *alarmstore.Record
	if kvs[0] != nil {
		if rec, err = alarmstore.Decode(o.p, o.key.class, o.key.id, kvs[0].Value); err != nil {
			return nil, &storageError{err}
		}
	}
	o.smu.Lock()
	defer o.smu.Unlock()
	if o.gen != gen {
		return nil, fmt.Errorf("%w: while reading the alarm", durable.ErrObjectReset)
	}
	o.alarm, o.alarmLoaded = rec, true
	return rec, nil
}

// knownAlarmLocked returns the alarm after the pending stages, if the
// object knows it without reading etcd. Caller holds o.smu.
func (o *object) knownAlarmLocked() (*alarmstore.Record, bool) {
	for _, s := range [2]*stage{o.next, o.flight} {
		if s != nil && s.alarmTouched {
			return s.alarm, true
		}
	}
	return o.alarm, o.alarmLoaded
}

// loadName reads the name the object was created under if it is not known.
func (o *object) loadName(ctx context.Context) error {
	o.smu.Lock()
	known := o.name != "" || o.nameStored
	o.smu.Unlock()
	if known {
		return nil
	}
	kvs, err := o.n.reader.get(ctx, o.n.keys.Object(o.p, o.key.class, o.key.id))
	if err != nil {
		return &storageError{err}
	}
	o.smu.Lock()
	defer o.smu.Unlock()
	if kvs[0] != nil {
		o.name, o.nameStored = string(kvs[0].Value), true
	}
	return nil
}

// alarmOpsLocked returns the ops that turn the committed alarm into want.
func (o *object) alarmOpsLocked(want *alarmstore.Record) []clientv3.Op {
	have := o.alarm
	switch {
	case want == nil && have == nil:
		return nil
	case want == nil:
		return o.n.alarms.DeleteOps(*have)
	case have != nil && *have == *want:
		return nil
	default:
		return o.n.alarms.PutOps(have, *want)
	}
}
