package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

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
	// Digest identifies the call (method and payload): a retry must be the
	// same call. Empty in rings written before it existed.
	Digest string `json:"digest,omitempty"`
}

// callDigest is what reqEntry.Digest holds for a call: 8 bytes of SHA-256
// over its method and payload.
func callDigest(method string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(payload)
	return hex.EncodeToString(h.Sum(nil)[:8])
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

// seenRequest returns the remembered request id, reading the object's ring
// from etcd once per activation.
func (pl *pipeline) seenRequest(ctx context.Context, id string) (reqEntry, bool, error) {
	pl.mu.Lock()
	loaded, gen := pl.reqsLoaded, pl.gen
	pl.mu.Unlock()
	if !loaded {
		kvs, err := pl.env.reads.Get(ctx, pl.env.keys.Requests(pl.p, pl.class, pl.idHex))
		if err != nil {
			return reqEntry{}, false, &storageError{fmt.Errorf("read request ids: %w", err)}
		}
		var ring []reqEntry
		if kvs[0] != nil {
			if err := json.Unmarshal(kvs[0].Value, &ring); err != nil {
				pl.env.log.Error("corrupt request ids ignored", "object", pl.idHex, "err", err)
				ring = nil
			}
		}
		pl.mu.Lock()
		if pl.gen != gen {
			// A commit failed meanwhile: the ring may be outdated.
			pl.mu.Unlock()
			return reqEntry{}, false, fmt.Errorf("%w: while reading request ids", durable.ErrObjectReset)
		}
		pl.reqs, pl.reqsLoaded = ring, true
		pl.mu.Unlock()
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, e := range pl.reqs {
		if e.ID == id {
			return e, true, nil
		}
	}
	return reqEntry{}, false, nil
}

// replayReply is the answer to a retry, with digest, of a request already
// applied.
func replayReply(e reqEntry, digest string) ([]byte, error) {
	if e.Digest != "" && e.Digest != digest {
		return nil, fmt.Errorf("%w: request %s was recorded for another method or payload; nothing ran", durable.ErrRequestIDReused, truncate(e.ID))
	}
	if e.Dropped {
		return nil, fmt.Errorf("%w: request %s was already applied; its reply was too large to keep", durable.ErrCommitUnknown, e.ID)
	}
	return e.Reply, nil
}
