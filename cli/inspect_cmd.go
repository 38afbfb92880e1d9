package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
)

// noEnv marks a flag applyEnv leaves alone: inspect's --prefix is a switch,
// and DURABLE_PREFIX, set for agent's --prefix (the cluster's key prefix),
// must not turn it on or fail to parse as one.
const noEnv = "durable_no_env"

func newInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect KEY",
		Short: "Read a key of the cluster from etcd and print its record decoded by kind (alarm, dead, req, …)",
		Long: "Read KEY (or, with --prefix, the keys starting with it) straight from etcd and print each value\n" +
			"decoded by the kind of key: alarm and dead-letter records (binary or the JSON of earlier\n" +
			"versions), a req/ key's request ring, obj/ names, the JSON of meta, nodes, assign, leaders and\n" +
			"lost records, owner and election values; raw bytes, in hex, for anything else. KEY is a whole\n" +
			"etcd key, e.g. /durable/alarm/00003/Reminder/<id>. It needs read access to etcd, not to a node." + envHelp +
			"\n--prefix excepted: DURABLE_PREFIX is the agent's cluster prefix (here --cluster-prefix).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			limit, _ := fs.GetInt64("limit")
			if limit <= 0 {
				return usageError{fmt.Errorf("--limit %d: want a positive number", limit)}
			}
			c, err := etcdClientConfig(fs)
			if err != nil {
				return err
			}
			c.Prefix, _ = fs.GetString("cluster-prefix")
			timeout, _ := fs.GetDuration("timeout")
			c.Timeout = timeout
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			etcd, err := agent.Dial(ctx, c)
			if err != nil {
				return err
			}
			defer etcd.Close()
			key := args[0]
			opts := []clientv3.OpOption{clientv3.WithLimit(limit)}
			prefix, _ := fs.GetBool("prefix")
			if prefix {
				opts = append(opts, clientv3.WithPrefix())
			}
			resp, err := etcd.Get(ctx, key, opts...)
			if err != nil {
				return fmt.Errorf("read %q: %w", key, err)
			}
			if len(resp.Kvs) == 0 && !prefix {
				return status.Errorf(codes.NotFound, "no key %q in etcd", key)
			}
			keys := keyspace.New(c.Prefix)
			out := make([]inspected, len(resp.Kvs))
			for i, kv := range resp.Kvs {
				out[i] = inspect(keys, kv)
			}
			more := resp.Count - int64(len(resp.Kvs))
			w := cmd.OutOrStdout()
			if asJSON, _ := fs.GetBool("json"); asJSON {
				var v any = out[0]
				if prefix {
					v = struct {
						Entries []inspected `json:"entries"`
						More    int64       `json:"more"`
					}{out, more}
				}
				b, err := json.MarshalIndent(v, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(b))
				return err
			}
			for i, e := range out {
				if i > 0 {
					fmt.Fprintln(w)
				}
				printInspected(w, e)
			}
			if more > 0 {
				fmt.Fprintf(w, "\nmore: %d keys not shown (raise --limit)\n", more)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	addEtcdFlags(fs)
	addEtcdLoginFlags(fs)
	fs.String("cluster-prefix", node.DefaultConfig().Prefix, "the cluster's etcd key prefix (agent's --prefix): how KEY's kind is told")
	fs.Bool("prefix", false, "read every key starting with KEY (at most --limit), like etcdctl get --prefix")
	_ = fs.SetAnnotation("prefix", noEnv, []string{"true"})
	fs.Int64("limit", 100, "with --prefix, the most keys read")
	fs.Duration("timeout", 10*time.Second, "deadline of the whole command")
	fs.Bool("json", false, "print JSON")
	return cmd
}

// addEtcdFlags registers the flags of a command that connects to etcd.
func addEtcdFlags(fs *pflag.FlagSet) {
	fs.StringSlice("etcd", []string{"http://127.0.0.1:2379"}, "etcd client endpoints, comma-separated")
	addEtcdTLSFlags(fs)
}

// addEtcdTLSFlags registers the flags of etcd's TLS, for a command whose
// --etcd flag is its own (bench).
func addEtcdTLSFlags(fs *pflag.FlagSet) {
	fs.String("etcd-ca", "", "CA bundle to verify etcd (PEM)")
	fs.String("etcd-cert", "", "client certificate for etcd (PEM)")
	fs.String("etcd-key", "", "private key of --etcd-cert (PEM)")
}

// addEtcdLoginFlags registers the flags of etcd's user/password login.
func addEtcdLoginFlags(fs *pflag.FlagSet) {
	fs.String("etcd-user", "", "etcd user (etcd's user/password auth); its password from --etcd-password-file or DURABLE_ETCD_PASSWORD")
	fs.String("etcd-password-file", "", "file holding the etcd user's password")
}

// etcdClientConfig reads the flags of addEtcdFlags and addEtcdLoginFlags.
func etcdClientConfig(fs *pflag.FlagSet) (agent.EtcdConfig, error) {
	var c agent.EtcdConfig
	var err error
	c.Endpoints, _ = fs.GetStringSlice("etcd")
	if c.TLS, err = etcdTLS(fs); err != nil {
		return c, err
	}
	c.User, c.Password, err = etcdLogin(fs)
	return c, err
}

// etcdLogin reads --etcd-user and its password: --etcd-password-file, else
// DURABLE_ETCD_PASSWORD.
func etcdLogin(fs *pflag.FlagSet) (user, password string, err error) {
	user, _ = fs.GetString("etcd-user")
	if file, _ := fs.GetString("etcd-password-file"); file != "" {
		if password, err = readSecret(file); err != nil {
			return "", "", fmt.Errorf("read --etcd-password-file: %w", err)
		}
	} else {
		password = os.Getenv(envPrefix + "ETCD_PASSWORD")
	}
	if password != "" && user == "" {
		return "", "", usageError{errors.New("an etcd password needs --etcd-user")}
	}
	return user, password, nil
}

// inspected is one key as `inspect` prints it.
type inspected struct {
	Key            string `json:"key"`
	Kind           string `json:"kind"` // a keyspace.Kind, or "unknown"
	Partition      *int   `json:"partition"`
	Class          string `json:"class"`
	ID             string `json:"id"`
	Node           string `json:"node"`
	DC             string `json:"dc"`
	Time           string `json:"time"` // a due/ key's due time, a dead/ key's scheduled time
	Data           string `json:"data_key"`
	CreateRevision int64  `json:"create_revision"`
	ModRevision    int64  `json:"mod_revision"`
	Version        int64  `json:"version"`
	Lease          string `json:"lease"` // hex, as etcdctl shows leases
	// Format is how the value is stored: binary/v1, json, text, or raw.
	Format string `json:"format"`
	Value  any    `json:"value"`
	// Error says why the value could not be decoded; it is then shown raw.
	Error string `json:"error"`
}

// alarmView is an alarm record or dead letter.
type alarmView struct {
	Name        string `json:"name"`
	NameHex     string `json:"name_hex"` // a name not valid UTF-8
	Due         string `json:"due"`
	DueMS       int64  `json:"due_ms"`
	Scheduled   string `json:"scheduled"`
	ScheduledMS int64  `json:"scheduled_ms"`
	RetryCount  int    `json:"retry_count"`
	LastError   string `json:"last_error"`
	Abandoned   string `json:"abandoned"`
	AbandonedMS int64  `json:"abandoned_ms"`
}

// requestView is one remembered request of a req/ ring.
type requestView struct {
	ID          string `json:"id"`
	Digest      string `json:"digest"`
	Dropped     bool   `json:"dropped"`
	Reply       string `json:"reply"`        // UTF-8
	ReplyBase64 string `json:"reply_base64"` // other bytes
}

// rawView is a value shown as its bytes.
type rawView struct {
	Text string `json:"text"` // the value, when it is UTF-8
	Hex  string `json:"hex"`
}

func formatMillis(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func viewAlarm(r alarmstore.Record) alarmView {
	v := alarmView{
		Name: r.Name, Due: formatMillis(r.Due), DueMS: r.Due.UnixMilli(),
		Scheduled: formatMillis(r.Scheduled), ScheduledMS: r.Scheduled.UnixMilli(),
		RetryCount: r.RetryCount, LastError: r.LastError,
	}
	if !utf8.ValidString(r.Name) {
		v.NameHex = hex.EncodeToString([]byte(r.Name))
	}
	return v
}

func viewRaw(v []byte) rawView {
	r := rawView{Hex: hex.EncodeToString(v)}
	if utf8.Valid(v) {
		r.Text = string(v)
	}
	return r
}

// inspect decodes kv by its key's kind under keys.
func inspect(keys keyspace.Space, kv *mvccpb.KeyValue) inspected {
	e := inspected{Key: string(kv.Key), Kind: "unknown", CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}
	if kv.Lease != 0 {
		e.Lease = fmt.Sprintf("%x", kv.Lease)
	}
	k, ok := keys.Parse(string(kv.Key))
	if !ok {
		e.Format, e.Value = "raw", viewRaw(kv.Value)
		return e
	}
	e.Kind, e.Class, e.ID, e.Node, e.DC, e.Data = string(k.Kind), k.Class, k.ID, k.Node, k.DC, k.Data
	switch k.Kind {
	case keyspace.KindAssign, keyspace.KindOwner, keyspace.KindObject, keyspace.KindData, keyspace.KindAlarm,
		keyspace.KindDue, keyspace.KindDead, keyspace.KindRequests:
		p := k.Partition
		e.Partition = &p
	}
	if k.Kind == keyspace.KindDue || k.Kind == keyspace.KindDead {
		e.Time = formatMillis(k.Time)
	}
	var id durable.ID // for errors; the key's ID is shown as written
	if len(k.ID) == hex.EncodedLen(len(id)) {
		_, _ = hex.Decode(id[:], []byte(k.ID))
	}
	var err error
	switch k.Kind {
	case keyspace.KindAlarm:
		var r *alarmstore.Record
		if r, err = alarmstore.Decode(k.Partition, k.Class, id, kv.Value); err == nil {
			e.Format, e.Value = alarmstore.Format(kv.Value), viewAlarm(*r)
		}
	case keyspace.KindDead:
		var d *alarmstore.DeadLetter
		if d, err = alarmstore.DecodeDead(k.Partition, k.Class, id, kv.Value); err == nil {
			v := viewAlarm(d.Record)
			v.Abandoned, v.AbandonedMS = formatMillis(d.Abandoned), d.Abandoned.UnixMilli()
			e.Format, e.Value = alarmstore.Format(kv.Value), v
		}
	case keyspace.KindRequests:
		var ring []node.RequestEntry
		if ring, err = node.DecodeRequestRing(kv.Value); err == nil {
			reqs := make([]requestView, len(ring))
			for i, r := range ring {
				reqs[i] = requestView{ID: r.ID, Digest: r.Digest, Dropped: r.Dropped}
				if utf8.Valid(r.Reply) {
					reqs[i].Reply = string(r.Reply)
				} else {
					reqs[i].ReplyBase64 = base64.StdEncoding.EncodeToString(r.Reply)
				}
			}
			e.Format, e.Value = "binary/v1", reqs
			if len(kv.Value) > 0 && kv.Value[0] == '[' {
				e.Format = "json"
			}
		}
	case keyspace.KindMeta, keyspace.KindNode, keyspace.KindAssign, keyspace.KindLeader, keyspace.KindLost:
		if json.Valid(kv.Value) {
			e.Format, e.Value = "json", json.RawMessage(kv.Value)
		} else {
			err = errors.New("not JSON")
		}
	case keyspace.KindClasses:
		classes := []string{}
		if len(kv.Value) > 0 {
			classes = strings.Split(string(kv.Value), ",")
		}
		e.Format, e.Value = "text", classes
	case keyspace.KindObject, keyspace.KindOwner, keyspace.KindElection:
		// A name (any bytes), a node id.
		e.Format, e.Value = "raw", viewRaw(kv.Value)
	default: // data (the object's own bytes), due (empty)
		e.Format, e.Value = "raw", viewRaw(kv.Value)
	}
	if err != nil {
		e.Format, e.Value, e.Error = "raw", viewRaw(kv.Value), err.Error()
	}
	return e
}

// printInspected writes e as label/value lines.
func printInspected(w io.Writer, e inspected) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	line := func(label, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{label}, args...)...)
	}
	line("key", "%s", e.Key)
	kind := e.Kind
	var parts []string
	if e.Partition != nil {
		parts = append(parts, fmt.Sprintf("partition %d", *e.Partition))
	}
	for _, p := range [][2]string{{"class", e.Class}, {"id", e.ID}, {"node", e.Node}, {"dc", e.DC}, {"time", e.Time}, {"data key", e.Data}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	if len(parts) > 0 {
		kind += " (" + strings.Join(parts, ", ") + ")"
	}
	line("kind", "%s", kind)
	lease := ""
	if e.Lease != "" {
		lease = ", lease " + e.Lease
	}
	line("revision", "created %d, modified %d, version %d%s", e.CreateRevision, e.ModRevision, e.Version, lease)
	line("format", "%s", e.Format)
	if e.Error != "" {
		line("error", "%s", e.Error)
	}
	switch v := e.Value.(type) {
	case alarmView:
		line("name", "%q", v.Name)
		line("due", "%s (%d ms)", v.Due, v.DueMS)
		line("scheduled", "%s (%d ms)", v.Scheduled, v.ScheduledMS)
		line("retry_count", "%d", v.RetryCount)
		line("last_error", "%q", v.LastError)
		if v.Abandoned != "" {
			line("abandoned", "%s (%d ms)", v.Abandoned, v.AbandonedMS)
		}
	case []requestView:
		line("requests", "%d, oldest first", len(v))
		for i, r := range v {
			reply := fmt.Sprintf("reply %.200q", r.Reply)
			switch {
			case r.Dropped:
				reply = "reply dropped (too large to keep)"
			case r.ReplyBase64 != "":
				reply = "reply (base64) " + r.ReplyBase64
			}
			digest := ""
			if r.Digest != "" {
				digest = " digest " + r.Digest
			}
			line(fmt.Sprintf("  %d", i+1), "id %s%s %s", r.ID, digest, reply)
		}
	case json.RawMessage:
		line("value", "%s", v)
	case []string:
		line("value", "%s", strings.Join(v, ","))
	case rawView:
		if v.Text != "" || v.Hex == "" {
			line("value", "%q", v.Text)
		} else {
			line("value", "hex %s", v.Hex)
		}
	}
}
