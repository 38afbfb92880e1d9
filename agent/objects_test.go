package agent_test

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// TestListObjectsPagesExactlyOverTheObjectsOfOneClass lists the objects of
// one class of two through gRPC: every page but the last is full, the last
// has no token, the pages together are the class's objects in (partition,
// ID) order, each once, with its name.
func TestListObjectsPagesExactlyOverTheObjectsOfOneClass(t *testing.T) {
	h := startKV(t)
	c := h.Dial()
	ctx := context.Background()
	const partitions = 8 // nodetest's default
	type obj struct {
		p    int32
		id   string
		name string
	}
	var want []obj
	for i := range 11 {
		name := fmt.Sprintf("kv-%02d", i)
		_, err := c.Invoke(ctx, "KV", client.ByName(name), "put", []byte("k=v"))
		require.NoError(t, err)
		id := durable.IDFromName("KV", name)
		want = append(want, obj{int32(id.Partition(partitions)), id.String(), name})
	}
	// Objects of unique IDs are listed too, without a name.
	for range 2 {
		id := durable.NewUniqueID("KV")
		_, err := c.Invoke(ctx, "KV", client.ByID(id.String()), "put", []byte("k=v"))
		require.NoError(t, err)
		want = append(want, obj{int32(id.Partition(partitions)), id.String(), ""})
	}
	sort.Slice(want, func(i, j int) bool {
		if want[i].p != want[j].p {
			return want[i].p < want[j].p
		}
		return want[i].id < want[j].id
	})
	for i := range 3 {
		_, err := c.Invoke(ctx, "Counter", client.ByName(fmt.Sprintf("counter-%d", i)), "increment", nil)
		require.NoError(t, err)
	}
	// An object that only read commits nothing, and is not listed.
	_, err := c.Invoke(ctx, "KV", client.ByName("read-only"), "get", nil)
	require.NoError(t, err)

	list := func(limit int32, token string) *durablev1.ListObjectsResponse {
		t.Helper()
		resp, err := c.Admin().ListObjects(ctx, &durablev1.ListObjectsRequest{Class: "KV", Limit: limit, PageToken: token})
		require.NoError(t, err)
		return resp
	}
	for _, limit := range []int32{1, 3, 4, 13, 14} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []obj
			token := ""
			for pages := 1; ; pages++ {
				require.LessOrEqual(t, pages, len(want)+1, "the listing does not end")
				resp := list(limit, token)
				for _, o := range resp.GetObjects() {
					require.Equal(t, "KV", o.GetClass())
					got = append(got, obj{o.GetPartition(), o.GetId(), o.GetName()})
				}
				token = resp.GetNextPageToken()
				if token == "" {
					break
				}
				require.Len(t, resp.GetObjects(), int(limit), "a page with a next page is full")
			}
			require.Equal(t, want, got)
		})
	}
	all := list(0, "")
	require.Len(t, all.GetObjects(), len(want), "limit 0 is the default (100)")
	require.Empty(t, all.GetNextPageToken())
	counters, err := c.Admin().ListObjects(ctx, &durablev1.ListObjectsRequest{Class: "Counter"})
	require.NoError(t, err)
	var names []string
	for _, o := range counters.GetObjects() {
		names = append(names, o.GetName())
	}
	sort.Strings(names)
	require.Equal(t, []string{"counter-0", "counter-1", "counter-2"}, names)
	none, err := c.Admin().ListObjects(ctx, &durablev1.ListObjectsRequest{Class: "Nobody"})
	require.NoError(t, err)
	require.Empty(t, none.GetObjects())

	kvToken := list(1, "").GetNextPageToken()
	counterToken := func() string {
		resp, err := c.Admin().ListObjects(ctx, &durablev1.ListObjectsRequest{Class: "Counter", Limit: 1})
		require.NoError(t, err)
		return resp.GetNextPageToken()
	}()
	for name, req := range map[string]*durablev1.ListObjectsRequest{
		"no class":                    {},
		"class with a slash":          {Class: "K/V"},
		"negative limit":              {Class: "KV", Limit: -1},
		"garbage token":               {Class: "KV", PageToken: "nonsense"},
		"an alarm listing's token":    {Class: "KV", PageToken: "due:0000000000000001/KV/x"},
		"a partition out of range":    {Class: "KV", PageToken: fmt.Sprintf("obj:%d/%s", partitions, want[0].id)},
		"another class's token":       {Class: "KV", PageToken: counterToken},
		"a token for the wrong class": {Class: "Counter", PageToken: kvToken},
	} {
		_, err := c.Admin().ListObjects(ctx, req)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", name, err)
	}
}
