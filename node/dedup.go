package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
)

// Request ids make retries exactly-once: an invocation whose event commits
// writes records its request id and reply in the object's req/ key in the
// same Txn; a retry carrying the id (after a lost reply, a node killed
// mid-call, a forward to a new owner) gets the stored reply instead of
// running again. Read-only events record nothing: running them again is
// harmless.
const (
	// MaxRequestIDBytes bounds a request id.
	MaxRequestIDBytes = 128
	// requestRing is how many recent requests an object remembers.
	requestRing = 16
	// maxKeptReply is the largest reply stored; a retry of a request whose
	// reply was larger learns that it was applied, not its reply.
	maxKeptReply = 16 << 10
)

// reqEntry is one remembered request.
type reqEntry struct {
	ID      string `json:"id"`
	Reply   []byte `json:"reply,omitempty"`
	Dropped bool   `json:"dropped,omitempty"` // the reply was too large to keep
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id of an invocation.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewRequestID returns a fresh random request id.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkRequestID validates a request id from a client.
func checkRequestID(id string) error {
	if len(id) > MaxRequestIDBytes {
		return durable.Invalidf("request id of %d bytes exceeds %d", len(id), MaxRequestIDBytes)
	}
	return nil
}

// loadRequests reads the object's remembered requests once per activation.
func (o *object) loadRequests(ctx context.Context) error {
	if o.reqsLoaded {
		return nil
	}
	kvs, err := o.n.reader.get(ctx, o.n.keys.Requests(o.p, o.key.class, o.key.id))
	if err != nil {
		return &storageError{fmt.Errorf("read request ids: %w", err)}
	}
	o.reqs = nil
	if kvs[0] != nil {
		if err := json.Unmarshal(kvs[0].Value, &o.reqs); err != nil {
			o.n.log.Error("corrupt request ids ignored", "object", o.key.id, "err", err)
			o.reqs = nil
		}
	}
	o.reqsLoaded = true
	return nil
}

// seenRequest returns the remembered request id.
func (o *object) seenRequest(id string) (reqEntry, bool) {
	for _, e := range o.reqs {
		if e.ID == id {
			return e, true
		}
	}
	return reqEntry{}, false
}

// rememberOp is the op that adds id and its reply to the object's ring, and
// the ring after it.
func (o *object) rememberOp(id string, reply []byte) (clientv3.Op, []reqEntry) {
	e := reqEntry{ID: id, Reply: reply}
	if len(reply) > maxKeptReply {
		e = reqEntry{ID: id, Dropped: true}
	}
	ring := append(append([]reqEntry(nil), o.reqs...), e)
	if len(ring) > requestRing {
		ring = ring[len(ring)-requestRing:]
	}
	b, _ := json.Marshal(ring)
	return clientv3.OpPut(o.n.keys.Requests(o.p, o.key.class, o.key.id), string(b)), ring
}

// replayReply is the answer to a retry of a request already applied.
func replayReply(e reqEntry) ([]byte, error) {
	if e.Dropped {
		return nil, fmt.Errorf("%w: request %s was already applied; its reply was too large to keep", durable.ErrCommitUnknown, e.ID)
	}
	return e.Reply, nil
}
