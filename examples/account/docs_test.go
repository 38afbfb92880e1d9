package account_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/examples/account"
	_ "github.com/durable-run/durable/examples/account/accountpb" // registers accountpb's messages
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// The lines of docs/classes.md this test runs ("…" in a pattern is any
// text; the docs' addresses are dev's, the test's cluster has its own).
var (
	// echo '{JSON}' | buf convert … --type accountpb.T … | base64, then the bytes.
	toBinary = regexp.MustCompile(`echo '(\{[^']*\})' \| buf convert examples/account --type accountpb\.(\w+) --from -#format=json --to -#format=binpb \| base64\n\s+(\S+)\n`)
	// echo BASE64 | base64 -d | buf convert … --type accountpb.T …, then the JSON.
	fromBinary = regexp.MustCompile(`echo (\S+) \| base64 -d \| buf convert examples/account --type accountpb\.(\w+) --from -#format=binpb --to -#format=json\n\s+(\{.*\})\n`)
	// grpcurl -d '{InvokeRequest}' …, then the reply's payload.
	grpcurl = regexp.MustCompile(`(?s)grpcurl -plaintext -d '(\{[^']*\})' 127\.0\.0\.1:4600 durable\.v1\.Objects/Invoke\n.*?"payload": "(\S+)",`)
	// echo '{JSON}' | buf convert (T) | curl … PATH | buf convert (U), then U's JSON.
	curl = regexp.MustCompile(`echo '(\{[^']*\})' \| buf convert examples/account --type accountpb\.(\w+) --from -#format=json --to -#format=binpb \\\n` +
		`\s+\| curl -s --data-binary @- -H 'Content-Type: application/octet-stream' http://127\.0\.0\.1:4800(\S+) \\\n` +
		`\s+\| buf convert examples/account --type accountpb\.(\w+) --from -#format=binpb --to -#format=json\n` +
		`\s+(\{.*\})\n`)
)

// message parses the protojson of the accountpb message named name.
func message(t *testing.T, name, js string) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("accountpb." + name))
	require.NoError(t, err)
	m := mt.New().Interface()
	require.NoError(t, protojson.Unmarshal([]byte(js), m), "%s %s", name, js)
	return m
}

// decode parses the binary of the accountpb message named name.
func decode(t *testing.T, name string, b []byte) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("accountpb." + name))
	require.NoError(t, err)
	m := mt.New().Interface()
	require.NoError(t, proto.Unmarshal(b, m))
	return m
}

func requireProtoEqual(t *testing.T, want, got proto.Message, msg string) {
	t.Helper()
	require.True(t, proto.Equal(want, got), "%s: want %v, got %v", msg, want, got)
}

// TestDocumentedCallsFromOtherLanguages runs the calls docs/classes.md
// shows for clients without the Go stub: the base64 it says buf convert
// makes and reads, the exact grpcurl -d argument (parsed as grpcurl does,
// protojson into the public InvokeRequest) and the curl through the HTTP
// front door, in the documented order, against a one-node cluster.
func TestDocumentedCallsFromOtherLanguages(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "classes.md"))
	require.NoError(t, err)

	m := toBinary.FindStringSubmatch(string(doc))
	require.NotNil(t, m, "docs/classes.md: no `echo … | buf convert … | base64` line")
	b, err := proto.Marshal(message(t, m[2], m[1]))
	require.NoError(t, err)
	require.Equal(t, m[3], base64.StdEncoding.EncodeToString(b), "the base64 of %s %s", m[2], m[1])

	m = fromBinary.FindStringSubmatch(string(doc))
	require.NotNil(t, m, "docs/classes.md: no `echo … | base64 -d | buf convert` line")
	b, err = base64.StdEncoding.DecodeString(m[1])
	require.NoError(t, err)
	requireProtoEqual(t, message(t, m[2], m[3]), decode(t, m[2], b), "the documented decoding of "+m[1])

	h := nodetest.StartOne(t, nodetest.Options{
		Etcd:     sharedEtcd,
		Register: func(reg *node.Registry) error { return account.Register(reg) },
		Agent:    func(cfg *agent.Config) { cfg.HTTPListen = "127.0.0.1:0" },
	})
	cl := h.Dial()
	ctx := context.Background()

	m = grpcurl.FindStringSubmatch(string(doc))
	require.NotNil(t, m, "docs/classes.md: no grpcurl line with its reply")
	var req durablev1.InvokeRequest
	require.NoError(t, protojson.Unmarshal([]byte(m[1]), &req), "the grpcurl -d argument")
	resp, err := durablev1.NewObjectsClient(cl.Conn()).Invoke(ctx, &req)
	require.NoError(t, err)
	require.Equal(t, m[2], base64.StdEncoding.EncodeToString(resp.GetPayload()), "grpcurl's reply payload")

	m = curl.FindStringSubmatch(string(doc))
	require.NotNil(t, m, "docs/classes.md: no curl pipeline")
	body, err := proto.Marshal(message(t, m[2], m[1]))
	require.NoError(t, err)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.Cluster.Agent(0).HTTPAddr()+m[3], bytes.NewReader(body))
	require.NoError(t, err)
	hreq.Header.Set("Content-Type", "application/octet-stream")
	hresp, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	defer hresp.Body.Close()
	out, err := io.ReadAll(hresp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, hresp.StatusCode, "%s", out)
	require.Equal(t, "application/octet-stream", hresp.Header.Get("Content-Type"))
	requireProtoEqual(t, message(t, m[4], m[5]), decode(t, m[4], out), "the curl pipeline's reply")
}
