package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/cli/clitest"
)

// TestInspectDecodesTheRecordsOfAnAlarm arms an alarm through `invoke` and
// reads its records back from etcd with `inspect`: the alarm record's
// fields, the request ring holding the invocation's reply, the index by
// --prefix, and raw bytes for a key outside the layout.
func TestInspectDecodesTheRecordsOfAnAlarm(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, cli.TestOptions, "--nodes", "1", "--partitions", "8")
	require.NotEmpty(t, dev.Etcd, dev.Out.String())
	reply, err := run(ctx, "invoke", "--addr", dev.Addrs[0], "Reminder", "r1", "set", `{"message":"hi","at":"2100-01-01T00:00:00Z"}`)
	require.NoError(t, err, reply)

	id := durable.IDFromName("Reminder", "r1")
	p := id.Partition(8)
	etcd := []string{"--etcd", dev.Etcd}
	alarmKey := fmt.Sprintf("/durable/alarm/%05d/Reminder/%s", p, id)
	const due = 4102444800000 // 2100-01-01T00:00:00Z

	// inspectJSON runs inspect --json args and decodes what it prints into v.
	inspectJSON := func(v any, args ...string) {
		t.Helper()
		out, err := run(ctx, append(append([]string{"inspect", "--json"}, args...), etcd...)...)
		require.NoError(t, err, out)
		require.NoError(t, json.Unmarshal([]byte(out), v), out)
	}
	var alarm struct {
		Kind      string `json:"kind"`
		Partition int    `json:"partition"`
		Class     string `json:"class"`
		ID        string `json:"id"`
		Format    string `json:"format"`
		Value     struct {
			Name        string `json:"name"`
			Due         string `json:"due"`
			DueMS       int64  `json:"due_ms"`
			ScheduledMS int64  `json:"scheduled_ms"`
			RetryCount  int    `json:"retry_count"`
			LastError   string `json:"last_error"`
		} `json:"value"`
	}
	inspectJSON(&alarm, alarmKey)
	require.Equal(t, "alarm", alarm.Kind)
	require.Equal(t, p, alarm.Partition)
	require.Equal(t, "Reminder", alarm.Class)
	require.Equal(t, id.String(), alarm.ID)
	require.Equal(t, "binary/v1", alarm.Format)
	require.Equal(t, "r1", alarm.Value.Name)
	require.Equal(t, "2100-01-01T00:00:00.000Z", alarm.Value.Due)
	require.Equal(t, int64(due), alarm.Value.DueMS)
	require.Equal(t, int64(due), alarm.Value.ScheduledMS)
	require.Zero(t, alarm.Value.RetryCount)
	require.Empty(t, alarm.Value.LastError)

	out, err := run(ctx, append([]string{"inspect", alarmKey}, etcd...)...)
	require.NoError(t, err, out)
	require.Regexp(t, `kind\s+alarm \(partition \d+, class Reminder, id `+id.String()+`\)`, out)
	require.Regexp(t, `name\s+"r1"`, out)
	require.Regexp(t, `due\s+2100-01-01T00:00:00.000Z \(4102444800000 ms\)`, out)
	require.Regexp(t, `retry_count\s+0\n`, out)

	reqKey := fmt.Sprintf("/durable/req/%05d/Reminder/%s", p, id)
	var req struct {
		Kind   string `json:"kind"`
		Format string `json:"format"`
		Value  []struct {
			ID     string `json:"id"`
			Digest string `json:"digest"`
			Reply  string `json:"reply"`
		} `json:"value"`
	}
	inspectJSON(&req, reqKey)
	require.Equal(t, "req", req.Kind)
	require.Equal(t, "binary/v1", req.Format)
	require.Len(t, req.Value, 1, "one invocation wrote")
	require.Regexp(t, `^[0-9a-f]+$`, req.Value[0].ID, "the client's request id")
	require.Len(t, req.Value[0].Digest, 16)
	require.Equal(t, strings.TrimSpace(reply), strings.TrimSpace(req.Value[0].Reply), "the stored reply is the one invoke printed")

	var dues struct {
		Entries []struct {
			Kind string `json:"kind"`
			Time string `json:"time"`
			ID   string `json:"id"`
		} `json:"entries"`
		More int64 `json:"more"`
	}
	inspectJSON(&dues, "--prefix", fmt.Sprintf("/durable/due/%05d/", p))
	require.Len(t, dues.Entries, 1)
	require.Equal(t, "due", dues.Entries[0].Kind)
	require.Equal(t, "2100-01-01T00:00:00.000Z", dues.Entries[0].Time)
	require.Equal(t, id.String(), dues.Entries[0].ID)
	require.Zero(t, dues.More)

	out, err = run(ctx, append([]string{"inspect", "--prefix", "/durable/nodes/", "--limit", "1"}, etcd...)...)
	require.NoError(t, err, out)
	require.Regexp(t, `kind\s+nodes \(node dev-1\)`, out)
	require.Regexp(t, `format\s+json\n`, out)
	require.Regexp(t, `revision\s+created \d+, modified \d+, version \d+, lease [0-9a-f]+`, out, "a registration is on the node's lease")

	// A record of an earlier version, as a cluster upgraded in place holds
	// it, and a key outside the layout.
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{dev.Etcd}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer c.Close()
	oldKey := fmt.Sprintf("/durable/alarm/%05d/Reminder/%s", p, durable.IDFromName("Reminder", "old"))
	_, err = c.Put(ctx, oldKey, `{"name_bytes":"gv8=","due_ms":5,"scheduled_ms":4,"retry_count":2,"last_error":"boom"}`)
	require.NoError(t, err)
	_, err = c.Put(ctx, "/durable/zz", "\x00\x01")
	require.NoError(t, err)
	out, err = run(ctx, append([]string{"inspect", oldKey}, etcd...)...)
	require.NoError(t, err, out)
	require.Regexp(t, `format\s+json\n`, out)
	require.Regexp(t, `name\s+"\\x82\\xff"`, out)
	require.Regexp(t, `retry_count\s+2\n`, out)
	require.Regexp(t, `last_error\s+"boom"`, out)
	out, err = run(ctx, append([]string{"inspect", "/durable/zz", "--json"}, etcd...)...)
	require.NoError(t, err, out)
	require.Regexp(t, `"kind": "unknown"`, out)
	require.Regexp(t, `"hex": "0001"`, out)

	// DURABLE_PREFIX, set for agent's --prefix, does not turn --prefix on.
	t.Setenv("DURABLE_PREFIX", "/other/")
	out, err = run(ctx, append([]string{"inspect", alarmKey}, etcd...)...)
	require.NoError(t, err, out)
	require.Regexp(t, `kind\s+alarm`, out)

	_, err = run(ctx, append([]string{"inspect", "/durable/alarm/00000/Reminder/none"}, etcd...)...)
	require.Equal(t, 3, cli.ExitCode(err), "a missing key: %v", err)
	_, err = run(ctx, append([]string{"inspect", "--prefix", "/durable/", "--limit", "0"}, etcd...)...)
	require.Equal(t, 2, cli.ExitCode(err), "a limit of 0: %v", err)
}
