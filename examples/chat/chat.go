// Package chat is an example class: Room, a chat room whose messages expire.
//
// Each Room object is one room, addressed by its name. Its typed methods are
// "post" (PostRequest → PostReply) and "read" (ReadRequest → ReadReply). A
// message lives for the room's TTL; the room's single alarm is kept at the
// earliest expiry, and its handler deletes what has expired and re-arms for
// the next message. Readers see a message until the alarm deletes it, which
// is at or after its expiry, never before.
//
// Storage layout: "seq" holds the last sequence number given out (so numbers
// are never reused, even after every message has expired) and "msg/<seq as
// 20 digits>" each message as JSON. The zero-padded key makes storage order
// sequence order and, because every message of a room has the same TTL, also
// expiry order: the oldest message is the next to expire.
//
// Mentions. A post whose text mentions users ("@ada") calls each one's
// Inbox object (class Inbox, one object per user, addressed by the user's
// name) with notify, through State.Objects, after the post has validated
// and numbered the message. An inbox keeps the room, the message's number,
// its author and an excerpt of its text; list reads them, clear deletes
// them up to a number. Its rules:
//
//   - Once per post. A call between objects carries a request id derived
//     from the calling event's, so a post retried with the same request id
//     (the client does so after a retryable error, such as an inbox that was
//     unavailable) sends the same notify calls and each inbox applies its
//     call once. Hence notify's request carries no time (the inbox stamps
//     its own): the retry's request must be the same.
//   - A mention of oneself is delivered: the inbox is another object than
//     the room, so the call is no cycle.
//   - Bounded. A message mentions at most MaxMentions users (a post
//     beyond it fails with ErrTooManyMentions before anything runs); an
//     inbox keeps at most MaxInbox mentions, dropping the oldest.
//   - Mentions expire with their messages: an inbox deletes a mention (by
//     its own alarm) the room's TTL after it received it — within the post's
//     own duration of the message's expiry — so that no excerpt outlives
//     the message it quotes.
//   - Not transactional with the room. A notify applied before the post
//     failed (a later inbox refused, the room's commit failed) stands: a
//     retry of the post does not repeat it, but a post abandoned after the
//     failure leaves the mention of a message that was never stored.
//     Notifying last, after every check, keeps that to failures of the
//     runtime. And if another post took the failed post's number before
//     the retry, the retry's notify is another call under the same request
//     id: the inbox refuses it (REQUEST_ID_REUSED) and the retry fails,
//     rather than mention one message twice under two numbers. The first
//     attempt's mention stays, its number now that of the other message:
//     a mention's excerpt, not its number, is what it quotes.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// ClassName is the name Register gives the room class.
const ClassName = "Room"

// Limits of Room's methods.
const (
	// DefaultTTL is how long a message lives when Config.TTL is zero.
	DefaultTTL = 10 * time.Minute
	// MaxTextBytes bounds a message's text.
	MaxTextBytes = 4096
	// MaxRead is the most messages one read returns, and its default.
	MaxRead = 100
)

// Config configures the class. The zero value works.
type Config struct {
	// TTL is how long a message lives (default DefaultTTL).
	TTL time.Duration
}

// Register adds Room and Inbox to reg; both use cfg.TTL.
func Register(reg *node.Registry, cfg Config) error {
	if cfg.TTL < 0 {
		return fmt.Errorf("chat: Config.TTL %s is negative", cfg.TTL)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if err := node.RegisterClass(reg, ClassName, func(_ context.Context, st durable.State) (*Room, error) {
		return newRoom(st, cfg.TTL), nil
	}); err != nil {
		return err
	}
	return node.RegisterClass(reg, InboxClassName, func(_ context.Context, st durable.State) (*Inbox, error) {
		return newInbox(st, cfg.TTL), nil
	})
}

// Message is one message of a room.
type Message struct {
	Seq     uint64    `json:"seq"`
	User    string    `json:"user"`
	Text    string    `json:"text"`
	Posted  time.Time `json:"posted"`
	Expires time.Time `json:"expires"`
}

// PostRequest is post's request.
type PostRequest struct {
	User string `json:"user"`
	Text string `json:"text"`
}

// PostReply is post's reply: the message's sequence number, when it
// expires and the users whose inboxes were notified.
type PostReply struct {
	Seq       uint64    `json:"seq"`
	Expires   time.Time `json:"expires"`
	Mentioned []string  `json:"mentioned,omitempty"`
}

// ReadRequest is read's request: messages after Since (0 for all), at most
// Limit of them (0 or more than MaxRead means MaxRead).
type ReadRequest struct {
	Since uint64 `json:"since"`
	Limit int    `json:"limit,omitempty"`
}

// ReadReply is read's reply, oldest first. More reports that messages after
// the last one returned remain: read again with Since set to its Seq.
type ReadReply struct {
	Messages []Message `json:"messages"`
	More     bool      `json:"more,omitempty"`
}

// Room's methods, shared by the class and its callers (client.Call).
var (
	Post = durable.NewMethod[PostRequest, PostReply]("post")
	Read = durable.NewMethod[ReadRequest, ReadReply]("read")
)

// Errors of post, returned to the caller as the object's own error.
var (
	ErrEmpty   = errors.New("chat: user and text are required")
	ErrTooLong = fmt.Errorf("chat: text is longer than %d bytes", MaxTextBytes)
)

// Room is one chat room.
type Room struct {
	*durable.Router
	st  durable.State
	ttl time.Duration
}

func newRoom(st durable.State, ttl time.Duration) *Room {
	r := &Room{st: st, ttl: ttl}
	r.Router = durable.Methods(
		durable.Handle(Post, r.post),
		durable.Handle(Read, r.read),
	)
	return r
}

const (
	seqKey    = "seq"
	msgPrefix = "msg/"
)

func msgKey(seq uint64) string { return fmt.Sprintf("%s%020d", msgPrefix, seq) }

func (r *Room) post(ctx context.Context, req PostRequest) (PostReply, error) {
	if req.User == "" || req.Text == "" {
		return PostReply{}, ErrEmpty
	}
	if len(req.Text) > MaxTextBytes {
		return PostReply{}, ErrTooLong
	}
	mentioned, err := Mentions(req.Text)
	if err != nil {
		return PostReply{}, err
	}
	s := r.st.Storage()
	last, _, err := s.Get(ctx, seqKey)
	if err != nil {
		return PostReply{}, err
	}
	var seq uint64
	if last != nil {
		if seq, err = strconv.ParseUint(string(last), 10, 64); err != nil {
			return PostReply{}, fmt.Errorf("chat: stored seq %q: %w", last, err)
		}
	}
	seq++
	now := r.st.Clock().Now().UTC()
	m := Message{Seq: seq, User: req.User, Text: req.Text, Posted: now, Expires: now.Add(r.ttl)}
	b, err := json.Marshal(m)
	if err != nil {
		return PostReply{}, err
	}
	if err := s.PutMany(ctx, map[string][]byte{
		seqKey:      []byte(strconv.FormatUint(seq, 10)),
		msgKey(seq): b,
	}); err != nil {
		return PostReply{}, err
	}
	// Keep the alarm at the earliest expiry. With one TTL an alarm already
	// set is for an older message, so this sets it only in an empty room;
	// the comparison keeps it right if the TTL was shortened since.
	if err := alarmBy(ctx, s, m.Expires); err != nil {
		return PostReply{}, err
	}
	if err := r.notify(ctx, m, mentioned); err != nil {
		return PostReply{}, err
	}
	return PostReply{Seq: seq, Expires: m.Expires, Mentioned: mentioned}, nil
}

// notify calls the inbox of each user m mentions, in order. The calls'
// request ids derive from this event's, so a retry of the post makes the
// same calls and each inbox applies its own once. An inbox's error is
// wrapped, not replaced: one the client may retry (an unavailable inbox)
// leaves the post retryable.
func (r *Room) notify(ctx context.Context, m Message, users []string) error {
	room := r.st.Name()
	if room == "" { // a room addressed by its ID only
		room = r.st.ID().String()
	}
	req := NotifyRequest{Room: room, Seq: m.Seq, Author: m.User, Excerpt: excerpt(m.Text)}
	for _, u := range users {
		if _, err := durable.CallObject(ctx, r.st.Objects(), InboxClassName, u, Notify, req); err != nil {
			return fmt.Errorf("chat: notify @%s: %w", u, err)
		}
	}
	return nil
}

// alarmBy sets the alarm to t unless it is set for earlier already.
func alarmBy(ctx context.Context, s durable.Storage, t time.Time) error {
	due, ok, err := s.GetAlarm(ctx)
	if err != nil {
		return err
	}
	if ok && !t.Before(due) {
		return nil
	}
	return s.SetAlarm(ctx, t)
}

func (r *Room) read(ctx context.Context, req ReadRequest) (ReadReply, error) {
	msgs, more, err := page[Message](ctx, r.st.Storage(), msgPrefix, msgKey(req.Since), req.Limit)
	return ReadReply{Messages: msgs, More: more}, err
}

// page reads the values under prefix after the key startAfter, decoded as
// T, in key order: at most limit (0 or more than MaxRead means MaxRead),
// and whether more remain.
func page[T any](ctx context.Context, s durable.Storage, prefix, startAfter string, limit int) ([]T, bool, error) {
	if limit <= 0 || limit > MaxRead {
		limit = MaxRead
	}
	// One more than asked for tells whether more remain.
	kvs, err := s.List(ctx, durable.ListOptions{Prefix: prefix, StartAfter: startAfter, Limit: limit + 1})
	if err != nil {
		return nil, false, err
	}
	more := len(kvs) > limit
	if more {
		kvs = kvs[:limit]
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, false, fmt.Errorf("chat: stored value %s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	return out, more, nil
}

// Alarm deletes the messages that have expired, oldest first, and re-arms
// for the next one to expire; with none left the alarm ends (the runtime
// deletes it). It reads the time from the object's clock: the alarm may run
// late (or be retried) and then deletes everything due by now, but it never
// deletes a message before its expiry, even if it ran early.
func (r *Room) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	s := r.st.Storage()
	now := r.st.Clock().Now()
	for {
		kvs, err := s.List(ctx, durable.ListOptions{Prefix: msgPrefix, Limit: durable.MaxKeysPerOp})
		if err != nil {
			return err
		}
		var expired []string
		var next time.Time // the first expiry still ahead, if any
		for _, kv := range kvs {
			var m Message
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				return fmt.Errorf("chat: stored message %s: %w", kv.Key, err)
			}
			if now.Before(m.Expires) {
				next = m.Expires
				break
			}
			expired = append(expired, kv.Key)
		}
		if len(expired) > 0 {
			if _, err := s.DeleteMany(ctx, expired); err != nil {
				return err
			}
		}
		switch {
		case !next.IsZero():
			return s.SetAlarm(ctx, next)
		case len(kvs) < durable.MaxKeysPerOp:
			return nil // the room is empty: no alarm until the next post
		}
		// A full page, all expired: list the next one.
	}
}
