package chat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples/chat"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

func inbox(t *testing.T, h *nodetest.Harness, user string) chat.ListReply {
	t.Helper()
	return call(t, h, chat.InboxClassName, user, chat.List, chat.ListRequest{})
}

func notify(t *testing.T, h *nodetest.Harness, user string, req chat.NotifyRequest) chat.NotifyReply {
	t.Helper()
	return call(t, h, chat.InboxClassName, user, chat.Notify, req)
}

func clearInbox(t *testing.T, h *nodetest.Harness, user string, through uint64) chat.ClearReply {
	t.Helper()
	return call(t, h, chat.InboxClassName, user, chat.Clear, chat.ClearRequest{Through: through})
}

func ns(r chat.ListReply) []uint64 {
	out := []uint64{}
	for _, m := range r.Mentions {
		out = append(out, m.N)
	}
	return out
}

func TestMentionsAreDistinctNamesAfterAnAt(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"no one", nil},
		{"@ada hi", []string{"ada"}},
		{"hi @ada, @bob. and @ada again", []string{"ada", "bob"}},
		{"(@c.d-e_f) @x-", []string{"c.d-e_f", "x"}},
		{"mail ada@example.com or @@bob", []string{"bob"}},
		{"a lone @ sign", nil},
	} {
		got, err := chat.Mentions(tc.text)
		require.NoError(t, err, tc.text)
		require.Equal(t, tc.want, got, tc.text)
	}
	var users []string
	for i := range chat.MaxMentions {
		users = append(users, fmt.Sprintf("@u%d", i))
	}
	got, err := chat.Mentions(strings.Join(users, " ") + " " + users[0])
	require.NoError(t, err, "a repeated mention counts once")
	require.Len(t, got, chat.MaxMentions)
	_, err = chat.Mentions(strings.Join(users, " ") + " @one-more")
	require.ErrorIs(t, err, chat.ErrTooManyMentions)
}

// TestPostNotifiesTheInboxOfEveryMentionedUser: each user mentioned gets
// one mention (room, number, author, excerpt, time) however often named;
// the author's own mention is delivered (the inbox is not the room, so no
// call cycle); a post without mentions calls no inbox.
func TestPostNotifiesTheInboxOfEveryMentionedUser(t *testing.T) {
	h := start(t)
	r := post(t, h, "lobby", "carol", "@ada and @bob: lunch? @ada?")
	require.Equal(t, []string{"ada", "bob"}, r.Mentioned)
	got := inbox(t, h, "ada")
	require.Equal(t, 1, got.Unread)
	require.Len(t, got.Mentions, 1)
	m := got.Mentions[0]
	require.Equal(t, chat.Mention{N: 1, Room: "lobby", Seq: r.Seq, Author: "carol", Excerpt: "@ada and @bob: lunch? @ada?",
		At: h.Clock.Now().UTC(), Expires: r.Expires}, m)
	require.Equal(t, []uint64{1}, ns(inbox(t, h, "bob")))
	require.Empty(t, inbox(t, h, "carol").Mentions, "the author is not mentioned")

	self := post(t, h, "lobby", "ada", "note to @ada: "+strings.Repeat("é", chat.MaxExcerptBytes))
	require.Equal(t, []string{"ada"}, self.Mentioned, "a mention of oneself")
	got = inbox(t, h, "ada")
	require.Equal(t, []uint64{1, 2}, ns(got))
	require.Equal(t, "ada", got.Mentions[1].Author)
	require.LessOrEqual(t, len(got.Mentions[1].Excerpt), chat.MaxExcerptBytes)
	require.True(t, strings.HasPrefix(got.Mentions[1].Excerpt, "note to @ada: éé"))
	require.True(t, strings.HasSuffix(got.Mentions[1].Excerpt, "é"), "cut on a character boundary")

	none := post(t, h, "lobby", "bob", "nobody here")
	require.Empty(t, none.Mentioned)
	require.Equal(t, []uint64{1}, ns(inbox(t, h, "bob")))
}

func TestPostWithTooManyMentionsIsRefusedAndNotifiesNobody(t *testing.T) {
	h := start(t)
	var text []string
	for i := range chat.MaxMentions + 1 {
		text = append(text, fmt.Sprintf("@u%d", i))
	}
	payload, err := chat.Post.EncodeRequest(chat.PostRequest{User: "ada", Text: strings.Join(text, " ")})
	require.NoError(t, err)
	_, err = h.Invoke(chat.ClassName, "lobby", chat.Post.Name(), payload)
	var oe *durable.ObjectError
	require.ErrorAs(t, err, &oe)
	require.Contains(t, err.Error(), chat.ErrTooManyMentions.Error())
	require.Empty(t, read(t, h, "lobby", 0, 0).Messages)
	require.Empty(t, inbox(t, h, "u0").Mentions)
}

// flakyLab scripts the inboxes of startFlaky: an inbox named in failNext
// fails its next notify as unreachable, and runs counts the notify runs
// each inbox's handler saw.
type flakyLab struct {
	mu       sync.Mutex
	failNext map[string]bool
	runs     map[string]int
}

func (l *flakyLab) failOnce(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failNext[user] = true
}

func (l *flakyLab) notifyRuns(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[user]
}

// flakyInbox is chat's Inbox behind the lab's faults.
type flakyInbox struct {
	durable.Object
	user string
	lab  *flakyLab
}

func (f *flakyInbox) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	if method == chat.Notify.Name() {
		f.lab.mu.Lock()
		f.lab.runs[f.user]++
		fail := f.lab.failNext[f.user]
		delete(f.lab.failNext, f.user)
		f.lab.mu.Unlock()
		if fail {
			return nil, fmt.Errorf("%w: test: the inbox of %s cannot be reached", durable.ErrUnavailable, f.user)
		}
	}
	return f.Object.Invoke(ctx, method, payload)
}

func (f *flakyInbox) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	return f.Object.(durable.Alarmer).Alarm(ctx, info)
}

// startFlaky is start with chat's classes registered through the public
// registry, the inbox wrapped in flakyInbox.
func startFlaky(t *testing.T) (*nodetest.Harness, *flakyLab) {
	t.Helper()
	lab := &flakyLab{failNext: map[string]bool{}, runs: map[string]int{}}
	h := nodetest.StartOne(t, nodetest.Options{
		Etcd:  sharedEtcd,
		Clock: nodetest.NewClock(),
		Register: func(reg *node.Registry) error {
			classes := node.NewRegistry()
			if err := chat.Register(classes, chat.Config{TTL: ttl}); err != nil {
				return err
			}
			room, err := classes.Lookup(chat.ClassName)
			if err != nil {
				return err
			}
			in, err := classes.Lookup(chat.InboxClassName)
			if err != nil {
				return err
			}
			if err := reg.Register(room.Name, room.Factory, room.HasAlarm); err != nil {
				return err
			}
			return reg.Register(in.Name, func(ctx context.Context, st durable.State) (durable.Object, error) {
				o, err := in.Factory(ctx, st)
				if err != nil {
					return nil, err
				}
				return &flakyInbox{Object: o, user: st.Name(), lab: lab}, nil
			}, in.HasAlarm)
		},
	})
	return h, lab
}

// postWithID returns a function that sends req to Room lobby's post with
// request id rid, as a client retrying by hand does.
func postWithID(t *testing.T, ctx context.Context, cl *client.Client, rid string, req chat.PostRequest) func() (*durablev1.InvokeResponse, error) {
	t.Helper()
	payload, err := chat.Post.EncodeRequest(req)
	require.NoError(t, err)
	objects := durablev1.NewObjectsClient(cl.Conn())
	return func() (*durablev1.InvokeResponse, error) {
		return objects.Invoke(ctx, &durablev1.InvokeRequest{
			Class: chat.ClassName, Object: client.ByName("lobby"), Method: chat.Post.Name(), Payload: payload, RequestId: rid,
		})
	}
}

// TestARetriedPostNotifiesEachInboxOnce: a post whose second inbox cannot
// be reached fails as retryable after the first inbox applied its notify;
// the post sent again with the same request id runs again and makes the same
// calls, whose derived request ids the first inbox recognises: it replays
// its reply without running, so each user has one mention. A third send is
// the room's own replay; the Go client's retries behave the same.
func TestARetriedPostNotifiesEachInboxOnce(t *testing.T) {
	h, lab := startFlaky(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := h.Dial()
	send := postWithID(t, ctx, cl, "post-1", chat.PostRequest{User: "carol", Text: "@ada @bob standup"})

	lab.failOnce("bob")
	_, err := send()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.True(t, client.Retryable(err), "an unreachable inbox leaves the post retryable: %v", err)
	require.Equal(t, []uint64{1}, ns(inbox(t, h, "ada")), "ada's notify, before bob's failed, stands")
	require.Empty(t, inbox(t, h, "bob").Mentions)
	require.Empty(t, read(t, h, "lobby", 0, 0).Messages, "the failed post stored nothing")

	for attempt := range 2 {
		resp, err := send()
		require.NoError(t, err, "attempt %d", attempt)
		r, err := chat.Post.DecodeReply(resp.GetPayload())
		require.NoError(t, err)
		require.Equal(t, uint64(1), r.Seq)
		require.Equal(t, []string{"ada", "bob"}, r.Mentioned)
	}
	require.Equal(t, 1, lab.notifyRuns("ada"), "the retry's call to ada was replayed, not run")
	require.Equal(t, 2, lab.notifyRuns("bob"), "bob's failed run and the retry's")
	require.Equal(t, []uint64{1}, ns(inbox(t, h, "ada")))
	require.Equal(t, []uint64{1}, ns(inbox(t, h, "bob")))
	require.Equal(t, []uint64{1}, seqs(read(t, h, "lobby", 0, 0)))

	// client.Call retries a retryable error itself, with the call's
	// request id: one call, one message, one mention each.
	lab.failOnce("bob")
	r, err := client.Call(ctx, cl, chat.ClassName, client.ByName("lobby"), chat.Post,
		chat.PostRequest{User: "carol", Text: "@ada @bob retro"})
	require.NoError(t, err)
	require.Equal(t, uint64(2), r.Seq)
	require.Equal(t, 2, lab.notifyRuns("ada"))
	require.Equal(t, 4, lab.notifyRuns("bob"))
	require.Equal(t, []uint64{1, 2}, ns(inbox(t, h, "ada")))
	require.Equal(t, []uint64{1, 2}, ns(inbox(t, h, "bob")))
	require.Equal(t, []uint64{1, 2}, seqs(read(t, h, "lobby", 0, 0)))
}

// TestARetryAfterAnotherPostTookItsNumberIsRefused: a post fails after
// notifying ada; another post takes its number; the retry would notify ada
// of another number under the same request id, so ada's inbox refuses it
// (REQUEST_ID_REUSED) and the retry fails instead of mentioning twice.
func TestARetryAfterAnotherPostTookItsNumberIsRefused(t *testing.T) {
	h, lab := startFlaky(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := postWithID(t, ctx, h.Dial(), "post-1", chat.PostRequest{User: "carol", Text: "@ada @bob standup"})
	lab.failOnce("bob")
	_, err := send()
	require.Equal(t, codes.Unavailable, status.Code(err))
	post(t, h, "lobby", "dan", "meanwhile")

	_, err = send()
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Equal(t, "REQUEST_ID_REUSED", client.Detail(err).GetReason())
	require.Equal(t, []uint64{1}, seqs(read(t, h, "lobby", 0, 0)), "only the other post is stored")
	got := inbox(t, h, "ada")
	require.Len(t, got.Mentions, 1, "the failed post's mention stands, once")
	require.Equal(t, uint64(1), got.Mentions[0].Seq)
	require.Empty(t, inbox(t, h, "bob").Mentions)
}

// TestInboxKeepsTheNewestMentionsAndClearsUpToANumber: beyond MaxInbox
// the oldest mention is dropped; clear deletes through the number given
// and no further, and an emptied inbox keeps no alarm.
func TestInboxKeepsTheNewestMentionsAndClearsUpToANumber(t *testing.T) {
	h := start(t)
	for i := range chat.MaxInbox + 5 {
		r := notify(t, h, "ada", chat.NotifyRequest{Room: "lobby", Seq: uint64(i + 1), Author: "bob", Excerpt: "hi @ada"})
		require.Equal(t, uint64(i+1), r.N)
		require.Equal(t, min(i+1, chat.MaxInbox), r.Unread)
	}
	got := inbox(t, h, "ada")
	require.Equal(t, chat.MaxInbox, got.Unread)
	require.Len(t, got.Mentions, chat.MaxRead)
	require.Equal(t, uint64(6), got.Mentions[0].N, "the five oldest were dropped")
	require.Equal(t, uint64(6), got.Mentions[0].Seq)

	require.Equal(t, chat.ClearReply{Cleared: 0, Unread: chat.MaxInbox}, clearInbox(t, h, "ada", 0))
	require.Equal(t, chat.ClearReply{Cleared: 5, Unread: chat.MaxInbox - 5}, clearInbox(t, h, "ada", 10))
	require.Equal(t, uint64(11), inbox(t, h, "ada").Mentions[0].N)
	require.Equal(t, chat.ClearReply{Cleared: 0, Unread: chat.MaxInbox - 5}, clearInbox(t, h, "ada", 10), "clear is safe to repeat")
	require.Equal(t, chat.ClearReply{Cleared: chat.MaxInbox - 5, Unread: 0}, clearInbox(t, h, "ada", 1000))
	_, ok := alarm(t, h.Dial(), chat.InboxClassName, "ada")
	require.False(t, ok, "an empty inbox keeps no alarm")

	r := notify(t, h, "ada", chat.NotifyRequest{Room: "lobby", Seq: 1, Author: "bob"})
	require.Equal(t, chat.NotifyReply{N: chat.MaxInbox + 6, Unread: 1}, r, "numbers are not reused")

	for name, bad := range map[string]chat.NotifyRequest{
		"no room":   {Seq: 1, Author: "bob"},
		"no seq":    {Room: "lobby", Author: "bob"},
		"no author": {Room: "lobby", Seq: 1},
		"long":      {Room: "lobby", Seq: 1, Author: "bob", Excerpt: strings.Repeat("x", chat.MaxExcerptBytes+1)},
	} {
		payload, err := chat.Notify.EncodeRequest(bad)
		require.NoError(t, err)
		_, err = h.Invoke(chat.InboxClassName, "ada", chat.Notify.Name(), payload)
		var oe *durable.ObjectError
		require.True(t, errors.As(err, &oe), "%s: want the object's error, got %v", name, err)
	}
}

// TestMentionsExpireWithTheirMessages: a mention is deleted by the inbox's
// alarm when the message it quotes expires, not a millisecond before.
func TestMentionsExpireWithTheirMessages(t *testing.T) {
	h := start(t)
	first := post(t, h, "lobby", "bob", "@ada first")
	h.Advance(ttl / 2)
	post(t, h, "lobby", "bob", "@ada second")
	due, ok := alarm(t, h.Dial(), chat.InboxClassName, "ada")
	require.True(t, ok && due.Equal(first.Expires), "the inbox's alarm is at the first mention's expiry")

	h.Advance(ttl/2 - time.Millisecond)
	settle(h)
	require.Equal(t, []uint64{1, 2}, ns(inbox(t, h, "ada")), "a mention was deleted early")
	h.Advance(time.Millisecond)
	h.WaitFor("the first mention deleted", func() bool { return len(inbox(t, h, "ada").Mentions) == 1 })
	require.Equal(t, []uint64{2}, ns(inbox(t, h, "ada")))
	h.WaitFor("the first message deleted", func() bool { return len(read(t, h, "lobby", 0, 0).Messages) == 1 })

	h.Advance(ttl / 2)
	h.WaitFor("the second mention deleted", func() bool { return inbox(t, h, "ada").Unread == 0 })
	settle(h)
	_, ok = alarm(t, h.Dial(), chat.InboxClassName, "ada")
	require.False(t, ok, "an inbox emptied by expiry keeps no alarm")
}
