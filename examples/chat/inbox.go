package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/durable-run/durable"
)

// InboxClassName is the name Register gives the inbox class.
const InboxClassName = "Inbox"

// Limits of Inbox and of mentions.
const (
	// MaxInbox is the most mentions an inbox keeps: a new one beyond it
	// drops the oldest.
	MaxInbox = 100
	// MaxMentions is the most users one message may mention.
	MaxMentions = 10
	// MaxExcerptBytes bounds the excerpt of the message an inbox keeps.
	MaxExcerptBytes = 140
)

// NotifyRequest is notify's request: message Seq of Room, by Author,
// mentions the inbox's user. It carries no time: a post retried later sends
// the same request, which the inbox then recognises (see Room).
type NotifyRequest struct {
	Room    string `json:"room"`
	Seq     uint64 `json:"seq"`
	Author  string `json:"author"`
	Excerpt string `json:"excerpt"`
}

// NotifyReply is notify's reply: the mention's number in the inbox and how
// many the inbox holds now.
type NotifyReply struct {
	N      uint64 `json:"n"`
	Unread int    `json:"unread"`
}

// Mention is one entry of an inbox. N numbers the inbox's mentions from 1
// and is never reused; At is when the inbox received it, Expires when it is
// deleted.
type Mention struct {
	N       uint64    `json:"n"`
	Room    string    `json:"room"`
	Seq     uint64    `json:"seq"`
	Author  string    `json:"author"`
	Excerpt string    `json:"excerpt"`
	At      time.Time `json:"at"`
	Expires time.Time `json:"expires"`
}

// ListRequest is list's request: mentions after Since (0 for all), at most
// Limit (0 or more than MaxRead means MaxRead).
type ListRequest struct {
	Since uint64 `json:"since"`
	Limit int    `json:"limit,omitempty"`
}

// ListReply is list's reply, oldest first; Unread counts every mention the
// inbox holds. More reports that mentions after the last one returned
// remain.
type ListReply struct {
	Mentions []Mention `json:"mentions"`
	Unread   int       `json:"unread"`
	More     bool      `json:"more,omitempty"`
}

// ClearRequest is clear's request: delete the mentions numbered up to and
// including Through (the last one the reader has seen; 0 clears nothing).
type ClearRequest struct {
	Through uint64 `json:"through"`
}

// ClearReply is clear's reply: how many mentions it deleted and how many
// remain.
type ClearReply struct {
	Cleared int `json:"cleared"`
	Unread  int `json:"unread"`
}

// Inbox's methods, shared by the class, Room and other callers.
var (
	Notify = durable.NewMethod[NotifyRequest, NotifyReply]("notify")
	List   = durable.NewMethod[ListRequest, ListReply]("list")
	Clear  = durable.NewMethod[ClearRequest, ClearReply]("clear")
)

// ErrBadMention is notify's error for a request without a room, a sequence
// number or an author, or with an excerpt over MaxExcerptBytes.
var ErrBadMention = fmt.Errorf("chat: a mention needs a room, a seq and an author, and an excerpt of at most %d bytes", MaxExcerptBytes)

// mentionRE finds "@name" not preceded by a word character (so that
// "ada@example.com" mentions nobody). A name is letters, digits, '_', '.'
// and '-', ending with a letter, digit or '_' ("@bob." mentions bob); it is
// case-sensitive, as object names are.
var mentionRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])@([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)`)

// ErrTooManyMentions is post's error for a message mentioning more than
// MaxMentions users.
var ErrTooManyMentions = fmt.Errorf("chat: a message may mention at most %d users", MaxMentions)

// Mentions returns the users text mentions, each once, in order of first
// mention; more than MaxMentions is ErrTooManyMentions.
func Mentions(text string) ([]string, error) {
	var users []string
	seen := map[string]bool{}
	for _, m := range mentionRE.FindAllStringSubmatch(text, -1) {
		if seen[m[1]] {
			continue
		}
		if len(users) == MaxMentions {
			return nil, ErrTooManyMentions
		}
		seen[m[1]] = true
		users = append(users, m[1])
	}
	return users, nil
}

// excerpt is text cut to MaxExcerptBytes on a character boundary.
func excerpt(text string) string {
	if len(text) <= MaxExcerptBytes {
		return text
	}
	cut := MaxExcerptBytes
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}

// Inbox is one user's mentions, addressed by the user's name.
type Inbox struct {
	*durable.Router
	st  durable.State
	ttl time.Duration
}

func newInbox(st durable.State, ttl time.Duration) *Inbox {
	in := &Inbox{st: st, ttl: ttl}
	in.Router = durable.Methods(
		durable.Handle(Notify, in.notify),
		durable.Handle(List, in.list),
		durable.Handle(Clear, in.clear),
	)
	return in
}

// inboxHead is the inbox's "head" key. Every deletion (expiry, the cap,
// clear) removes the oldest mentions, so the inbox holds exactly the
// numbers Gone+1 … Last.
type inboxHead struct {
	Last uint64 `json:"last"` // the last number given out
	Gone uint64 `json:"gone"` // every mention up to it is deleted
}

func (h inboxHead) unread() int { return int(h.Last - h.Gone) }

const (
	headKey       = "head"
	mentionPrefix = "m/"
)

func mentionKey(n uint64) string { return fmt.Sprintf("%s%020d", mentionPrefix, n) }

func (in *Inbox) head(ctx context.Context) (inboxHead, error) {
	var h inboxHead
	b, ok, err := in.st.Storage().Get(ctx, headKey)
	if err != nil || !ok {
		return h, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("chat: stored inbox head %q: %w", b, err)
	}
	return h, nil
}

// drop deletes the mentions numbered up to through (oldest first) and
// records it in h, which the caller stores.
func (in *Inbox) drop(ctx context.Context, h *inboxHead, through uint64) (int, error) {
	var keys []string
	for n := h.Gone + 1; n <= through && n <= h.Last; n++ {
		keys = append(keys, mentionKey(n))
	}
	if len(keys) == 0 {
		return 0, nil
	}
	// Never more than MaxKeysPerOp: the inbox holds at most MaxInbox+1.
	if _, err := in.st.Storage().DeleteMany(ctx, keys); err != nil {
		return 0, err
	}
	h.Gone += uint64(len(keys))
	return len(keys), nil
}

func (in *Inbox) putHead(ctx context.Context, h inboxHead) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return in.st.Storage().Put(ctx, headKey, b)
}

func (in *Inbox) notify(ctx context.Context, req NotifyRequest) (NotifyReply, error) {
	if req.Room == "" || req.Seq == 0 || req.Author == "" || len(req.Excerpt) > MaxExcerptBytes {
		return NotifyReply{}, ErrBadMention
	}
	h, err := in.head(ctx)
	if err != nil {
		return NotifyReply{}, err
	}
	h.Last++
	now := in.st.Clock().Now().UTC()
	m := Mention{N: h.Last, Room: req.Room, Seq: req.Seq, Author: req.Author, Excerpt: req.Excerpt, At: now, Expires: now.Add(in.ttl)}
	b, err := json.Marshal(m)
	if err != nil {
		return NotifyReply{}, err
	}
	s := in.st.Storage()
	if err := s.Put(ctx, mentionKey(m.N), b); err != nil {
		return NotifyReply{}, err
	}
	if h.unread() > MaxInbox {
		if _, err := in.drop(ctx, &h, h.Last-MaxInbox); err != nil {
			return NotifyReply{}, err
		}
	}
	if err := in.putHead(ctx, h); err != nil {
		return NotifyReply{}, err
	}
	// As Room's: the alarm stays at the earliest expiry.
	if err := alarmBy(ctx, s, m.Expires); err != nil {
		return NotifyReply{}, err
	}
	return NotifyReply{N: m.N, Unread: h.unread()}, nil
}

func (in *Inbox) list(ctx context.Context, req ListRequest) (ListReply, error) {
	h, err := in.head(ctx)
	if err != nil {
		return ListReply{}, err
	}
	mentions, more, err := page[Mention](ctx, in.st.Storage(), mentionPrefix, mentionKey(req.Since), req.Limit)
	return ListReply{Mentions: mentions, Unread: h.unread(), More: more}, err
}

func (in *Inbox) clear(ctx context.Context, req ClearRequest) (ClearReply, error) {
	h, err := in.head(ctx)
	if err != nil {
		return ClearReply{}, err
	}
	n, err := in.drop(ctx, &h, req.Through)
	if err != nil || n == 0 {
		return ClearReply{Unread: h.unread()}, err
	}
	if err := in.putHead(ctx, h); err != nil {
		return ClearReply{}, err
	}
	if h.unread() == 0 {
		if err := in.st.Storage().DeleteAlarm(ctx); err != nil {
			return ClearReply{}, err
		}
	}
	return ClearReply{Cleared: n, Unread: h.unread()}, nil
}

// Alarm deletes the expired mentions, oldest first, and re-arms for the
// next one; as Room's, it never deletes a mention before its expiry.
func (in *Inbox) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	h, err := in.head(ctx)
	if err != nil {
		return err
	}
	now := in.st.Clock().Now()
	// At most MaxInbox mentions: one page.
	kvs, err := in.st.Storage().List(ctx, durable.ListOptions{Prefix: mentionPrefix, Limit: MaxInbox + 1})
	if err != nil {
		return err
	}
	through := h.Gone
	var next time.Time // the first expiry still ahead, if any
	for _, kv := range kvs {
		var m Mention
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return fmt.Errorf("chat: stored mention %s: %w", kv.Key, err)
		}
		if now.Before(m.Expires) {
			next = m.Expires
			break
		}
		through = m.N
	}
	if through > h.Gone {
		if _, err := in.drop(ctx, &h, through); err != nil {
			return err
		}
		if err := in.putHead(ctx, h); err != nil {
			return err
		}
	}
	if next.IsZero() {
		return nil // the inbox is empty: no alarm until the next mention
	}
	return in.st.Storage().SetAlarm(ctx, next)
}
