package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples/chat"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

const ttl = time.Minute

// start runs a one-node cluster serving Room with a one-minute TTL on a fake
// clock.
func start(t *testing.T) *nodetest.Harness {
	t.Helper()
	return nodetest.StartOne(t, nodetest.Options{
		Etcd:  sharedEtcd,
		Clock: nodetest.NewClock(),
		Register: func(reg *node.Registry) error {
			return chat.Register(reg, chat.Config{TTL: ttl})
		},
	})
}

// settle waits until everything the fake clock's time made due has run.
// Room's alarm handler never waits on the clock, so no handler may still be
// running once the node is quiet.
func settle(h *nodetest.Harness) {
	h.WaitQuiet()
	h.WaitFor("alarm handlers done", func() bool { return h.Node().RunningAlarms() == 0 })
}

// call invokes the typed method m of an object in-process.
func call[Req, Resp any](t *testing.T, h *nodetest.Harness, class, name string, m durable.Method[Req, Resp], req Req) Resp {
	t.Helper()
	payload, err := m.EncodeRequest(req)
	require.NoError(t, err)
	reply, err := m.DecodeReply(h.MustInvoke(class, name, m.Name(), payload))
	require.NoError(t, err)
	return reply
}

func post(t *testing.T, h *nodetest.Harness, room, user, text string) chat.PostReply {
	t.Helper()
	return call(t, h, chat.ClassName, room, chat.Post, chat.PostRequest{User: user, Text: text})
}

func read(t *testing.T, h *nodetest.Harness, room string, since uint64, limit int) chat.ReadReply {
	t.Helper()
	return call(t, h, chat.ClassName, room, chat.Read, chat.ReadRequest{Since: since, Limit: limit})
}

func seqs(r chat.ReadReply) []uint64 {
	out := []uint64{}
	for _, m := range r.Messages {
		out = append(out, m.Seq)
	}
	return out
}

// alarm reads an object's alarm through the Admin API.
func alarm(t *testing.T, cl *client.Client, class, name string) (time.Time, bool) {
	t.Helper()
	resp, err := cl.Admin().GetAlarm(context.Background(), &durablev1.GetAlarmRequest{Class: class, Object: client.ByName(name)})
	require.NoError(t, err)
	if resp.GetAlarm() == nil {
		return time.Time{}, false
	}
	return time.UnixMilli(resp.GetAlarm().GetScheduledUnixMs()), true
}

func TestPostNumbersMessagesAndReadPagesThem(t *testing.T) {
	h := start(t)
	posted := h.Clock.Now()
	for i, text := range []string{"one", "two", "three"} {
		r := post(t, h, "lobby", "ada", text)
		require.Equal(t, uint64(i+1), r.Seq)
		require.True(t, r.Expires.Equal(posted.Add(ttl)), "expires %s", r.Expires)
	}
	post(t, h, "other", "bob", "rooms are separate")

	all := read(t, h, "lobby", 0, 0)
	require.Equal(t, []uint64{1, 2, 3}, seqs(all))
	require.False(t, all.More)
	require.Equal(t, "ada", all.Messages[1].User)
	require.Equal(t, "two", all.Messages[1].Text)
	require.True(t, all.Messages[1].Posted.Equal(posted))

	page := read(t, h, "lobby", 0, 2)
	require.Equal(t, []uint64{1, 2}, seqs(page))
	require.True(t, page.More)
	rest := read(t, h, "lobby", 2, 2)
	require.Equal(t, []uint64{3}, seqs(rest))
	require.False(t, rest.More)
	require.Empty(t, read(t, h, "lobby", 3, 0).Messages)
	require.Equal(t, []uint64{1}, seqs(read(t, h, "other", 0, 0)))
}

func TestPostRefusesBadMessages(t *testing.T) {
	h := start(t)
	for name, req := range map[string]chat.PostRequest{
		"no user":  {Text: "hi"},
		"no text":  {User: "ada"},
		"too long": {User: "ada", Text: strings.Repeat("x", chat.MaxTextBytes+1)},
	} {
		t.Run(name, func(t *testing.T) {
			payload, err := chat.Post.EncodeRequest(req)
			require.NoError(t, err)
			_, err = h.Invoke(chat.ClassName, "lobby", chat.Post.Name(), payload)
			var oe *durable.ObjectError
			require.True(t, errors.As(err, &oe), "want the object's error, got %v", err)
		})
	}
	_, err := h.Invoke(chat.ClassName, "lobby", chat.Post.Name(), []byte(`not json`))
	require.ErrorIs(t, err, durable.ErrBadPayload)
	require.Empty(t, read(t, h, "lobby", 0, 0).Messages, "a refused post stores nothing")
}

// TestMessagesExpireByAlarmAtTheirTTLNeverEarly: the alarm is set for the
// oldest message's expiry, deletes it then and not a millisecond before,
// and re-arms for the next message; an empty room has no alarm, and sequence
// numbers are not reused after everything expired.
func TestMessagesExpireByAlarmAtTheirTTLNeverEarly(t *testing.T) {
	h := start(t)
	cl := h.Dial()
	t0 := h.Clock.Now()
	first := post(t, h, "lobby", "ada", "first")
	due, ok := alarm(t, cl, chat.ClassName, "lobby")
	require.True(t, ok, "a post arms the room's alarm")
	require.True(t, due.Equal(first.Expires), "alarm %s, first expires %s", due, first.Expires)

	h.Advance(ttl / 2)
	second := post(t, h, "lobby", "bob", "second")
	due, _ = alarm(t, cl, chat.ClassName, "lobby")
	require.True(t, due.Equal(first.Expires), "a later message leaves the alarm at the earliest expiry")

	h.Advance(ttl/2 - time.Millisecond) // one millisecond before the first expires
	settle(h)
	require.Equal(t, []uint64{1, 2}, seqs(read(t, h, "lobby", 0, 0)), "a message was deleted early")

	h.Advance(time.Millisecond) // exactly the first's expiry
	h.WaitFor("the first message deleted", func() bool {
		return len(read(t, h, "lobby", 0, 0).Messages) == 1
	})
	require.Equal(t, []uint64{2}, seqs(read(t, h, "lobby", 0, 0)))
	require.True(t, h.Clock.Now().Equal(t0.Add(ttl)))
	h.WaitFor("re-armed for the second message", func() bool {
		due, ok := alarm(t, cl, chat.ClassName, "lobby")
		return ok && due.Equal(second.Expires)
	})

	h.Advance(ttl/2 - time.Millisecond)
	settle(h)
	require.Equal(t, []uint64{2}, seqs(read(t, h, "lobby", 0, 0)), "the second message was deleted early")
	h.Advance(time.Millisecond)
	h.WaitFor("the second message deleted", func() bool {
		return len(read(t, h, "lobby", 0, 0).Messages) == 0
	})
	settle(h)
	_, ok = alarm(t, cl, chat.ClassName, "lobby")
	require.False(t, ok, "an empty room keeps no alarm")

	third := post(t, h, "lobby", "ada", "third")
	require.Equal(t, uint64(3), third.Seq, "sequence numbers are not reused")
	due, ok = alarm(t, cl, chat.ClassName, "lobby")
	require.True(t, ok && due.Equal(third.Expires), "the next post arms the alarm again")
}

// TestOneAlarmDeletesMoreThanOneStoragePage: one alarm run deletes every
// expired message, more than one List page (MaxKeysPerOp) of them, and
// re-arms for the first message still alive.
func TestOneAlarmDeletesMoreThanOneStoragePage(t *testing.T) {
	h := start(t)
	n := durable.MaxKeysPerOp + 10
	for i := range n {
		post(t, h, "busy", "ada", fmt.Sprint(i))
	}
	h.Advance(time.Second)
	last := post(t, h, "busy", "bob", "still here")
	h.Advance(ttl - time.Second) // the first n have expired, the last has not
	h.WaitFor("the expired messages deleted", func() bool {
		return len(read(t, h, "busy", 0, 0).Messages) == 1
	})
	require.Equal(t, []uint64{last.Seq}, seqs(read(t, h, "busy", 0, 0)))
	cl := h.Dial()
	h.WaitFor("re-armed for the last message", func() bool {
		due, ok := alarm(t, cl, chat.ClassName, "busy")
		return ok && due.Equal(last.Expires)
	})
}

// TestTypedCallsThroughAThreeNodeCluster: a Go client calls Room's typed
// methods (client.Call and a bound stub) through any node of a cluster; the
// rooms are spread over the nodes' partitions, and their posts reach the
// inbox of the user they mention wherever it is.
func TestTypedCallsThroughAThreeNodeCluster(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3,
		Etcd:  sharedEtcd,
		Register: func(reg *node.Registry) error {
			return chat.Register(reg, chat.Config{})
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.DialAll()
	for i := range 6 {
		room := fmt.Sprintf("room-%d", i)
		for j := range 2 {
			r, err := client.Call(ctx, cl, chat.ClassName, client.ByName(room), chat.Post,
				chat.PostRequest{User: "ada", Text: fmt.Sprintf("%s #%d @bob", room, j)})
			require.NoError(t, err)
			require.Equal(t, uint64(j+1), r.Seq)
		}
		read := client.Bind(cl.Stub(chat.ClassName, client.ByName(room)), chat.Read)
		got, err := read(ctx, chat.ReadRequest{Since: 1})
		require.NoError(t, err)
		require.Len(t, got.Messages, 1)
		require.Equal(t, room+" #1 @bob", got.Messages[0].Text)
	}
	// bob's inbox, on one node, was called from rooms on every node.
	list := client.Bind(cl.Stub(chat.InboxClassName, client.ByName("bob")), chat.List)
	mentions, err := list(ctx, chat.ListRequest{})
	require.NoError(t, err)
	require.Equal(t, 12, mentions.Unread)

	// The JSON on the wire is what curl and `chat invoke` send and see.
	resp, err := cl.Invoke(ctx, chat.ClassName, client.ByName("room-0"), "read", []byte(`{"since":1}`))
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(resp.GetPayload(), &raw))
	require.Contains(t, raw, "messages")
}
