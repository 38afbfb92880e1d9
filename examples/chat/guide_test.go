package chat_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/durable-run/durable/examples/chat"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// TestGuideQuotesTheExample: every Go block of docs/guide.md marked
// "<!-- quote: PATH -->" appears verbatim in PATH, so the guide cannot drift
// from the code that compiles and is tested.
func TestGuideQuotesTheExample(t *testing.T) {
	root := filepath.Join("..", "..")
	guide, err := os.ReadFile(filepath.Join(root, "docs", "guide.md"))
	require.NoError(t, err)
	quote := regexp.MustCompile("(?s)<!-- quote: (\\S+) -->\n```go\n(.*?)```\n")
	found := quote.FindAllStringSubmatch(string(guide), -1)
	require.NotEmpty(t, found, "the guide quotes no code")
	for _, m := range found {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(m[1])))
		require.NoError(t, err, "the guide quotes %s", m[1])
		require.True(t, strings.Contains(string(src), m[2]), "docs/guide.md quotes from %s what it no longer holds:\n%s", m[1], m[2])
	}
}

// TestGuideGrpcurlLineCallsTheRoom: the guide's grpcurl -d argument is a
// valid InvokeRequest of the public proto, its payload the base64 of the
// JSON the guide says, and sent to a node it posts to the room.
func TestGuideGrpcurlLineCallsTheRoom(t *testing.T) {
	guide, err := os.ReadFile(filepath.Join("..", "..", "docs", "guide.md"))
	require.NoError(t, err)
	m := regexp.MustCompile(`\$ grpcurl -plaintext -d '(\{.*\})' 127\.0\.0\.1:4600 durable\.v1\.Objects/Invoke`).FindSubmatch(guide)
	require.NotNil(t, m, "docs/guide.md: no grpcurl line")
	var req durablev1.InvokeRequest
	require.NoError(t, protojson.Unmarshal(m[1], &req), "the grpcurl -d argument")
	js := regexp.MustCompile(`echo -n '(\{.*?\})' \| base64`).FindSubmatch(guide)
	require.NotNil(t, js, "docs/guide.md: no line making the payload")
	require.Equal(t, string(js[1]), string(req.GetPayload()), "the payload is the base64 of the JSON shown")

	h := start(t)
	resp, err := durablev1.NewObjectsClient(h.Dial().Conn()).Invoke(context.Background(), &req)
	require.NoError(t, err)
	var reply chat.PostReply
	require.NoError(t, json.Unmarshal(resp.GetPayload(), &reply), "the reply is JSON: %s", resp.GetPayload())
	require.EqualValues(t, 1, reply.Seq)
	require.True(t, strings.HasPrefix(base64.StdEncoding.EncodeToString(resp.GetPayload()), "eyJzZXEiOj"), "the reply starts as the guide shows")
}
