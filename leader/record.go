package leader

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
)

// Record is what a data center's leader publishes at leaders/<dc>, for
// operators: who leads, its term as a small number, and how long it has
// seen each data center up or down, from which status tells how far an
// adoption or a failback has come. A new leader writes it once elected and
// again whenever a data center goes up or down; every write is fenced by
// its election key, like its assignments. The record of a data center
// whose leader is gone stays until its next leader replaces it.
type Record struct {
	DC     string `json:"dc"`
	Node   string `json:"node"`
	Term   int64  `json:"term"`   // election key create revision (the fence)
	Number int64  `json:"number"` // 1 for the data center's first leader, then one more per election
	// ElectedAt, and the times below, are Unix milliseconds.
	ElectedAt int64 `json:"elected_at"`
	// DownSince holds the data centers the leader sees without a live,
	// non-draining node, and since when; UpSince those with one.
	DownSince   map[string]int64 `json:"down_since,omitempty"`
	UpSince     map[string]int64 `json:"up_since,omitempty"`
	GraceMs     int64            `json:"grace_ms"`
	StabiliseMs int64            `json:"stabilise_ms"`
}

// Loss is a node whose partitions a leader moved away because the node was
// gone (its lease expired), written at lost/<node>/<dc> on a lease of
// lossTTL: at least one record per leader that moved them.
type Loss struct {
	Node string `json:"node"`
	DC   string `json:"dc"` // the data center that managed its partitions
	// At is when the node was lost as the leader saw it: the round that
	// found it gone, or, for an adopted data center, when it went down.
	At   int64  `json:"at"`
	By   string `json:"by"`    // the leader that moved the partitions
	ByDC string `json:"by_dc"` // and its data center
	// Moved counts the partitions moved, by the node they went to.
	Moved map[string]int `json:"moved"`
}

// lossTTL is how long a lost-node record lives.
const lossTTL = time.Hour

// Losses returns, per node that changes move partitions away from and that
// is not registered in v, where its partitions went. Draining nodes are
// registered: moving off them is not a loss.
func Losses(v View, changes []Change, by string) []Loss {
	byNode := map[string]*Loss{}
	for _, c := range changes {
		if c.From == "" || c.From == c.Next.Node {
			continue
		}
		if _, live := v.Nodes[c.From]; live {
			continue
		}
		l := byNode[c.From]
		if l == nil {
			at := v.Now
			if prev := v.Assign[c.P]; prev.DC != v.DC {
				if t, ok := v.DownSince[prev.DC]; ok {
					at = t
				}
			}
			l = &Loss{Node: c.From, DC: v.Assign[c.P].DC, At: at.UnixMilli(), By: by, ByDC: v.DC, Moved: map[string]int{}}
			byNode[c.From] = l
		}
		l.Moved[c.Next.Node]++
	}
	out := make([]Loss, 0, len(byNode))
	for _, l := range byNode {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// publish writes rec at leaders/<dc> if key still has create revision
// term.
func (l *Leader) publish(ctx context.Context, key string, term int64, rec Record) error {
	b, _ := json.Marshal(rec)
	resp, err := l.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", term)).
		Then(clientv3.OpPut(l.keys.LeaderRecord(l.cfg.DC), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("publish leader record: %w", err)
	}
	if !resp.Succeeded {
		return errDeposed
	}
	return nil
}

// elected returns the record a leader of term publishes first: the number
// after its predecessor's.
func (l *Leader) elected(ctx context.Context, term int64) (Record, error) {
	resp, err := l.client.Get(ctx, l.keys.LeaderRecord(l.cfg.DC))
	if err != nil {
		return Record{}, fmt.Errorf("read leader record: %w", err)
	}
	rec := Record{
		DC: l.cfg.DC, Node: l.cfg.Node, Term: term, Number: 1, ElectedAt: l.cfg.Clock.Now().UnixMilli(),
		GraceMs: l.cfg.Grace.Milliseconds(), StabiliseMs: l.cfg.Stabilise.Milliseconds(),
	}
	if len(resp.Kvs) > 0 {
		var prev Record
		if json.Unmarshal(resp.Kvs[0].Value, &prev) == nil {
			rec.Number = prev.Number + 1
		}
	}
	return rec, nil
}

// withHealth returns rec with the data centers' up and down times; changed
// reports whether they differ from rec's.
func withHealth(rec Record, down, up map[string]time.Time) (Record, bool) {
	ms := func(m map[string]time.Time) map[string]int64 {
		out := make(map[string]int64, len(m))
		for dc, t := range m {
			out[dc] = t.UnixMilli()
		}
		return out
	}
	d, u := ms(down), ms(up)
	changed := !maps.Equal(d, rec.DownSince) || !maps.Equal(u, rec.UpSince)
	rec.DownSince, rec.UpSince = d, u
	return rec, changed
}

// recordLosses writes a lost-node record per loss, fenced by term, each
// merged with the record this data center's leaders wrote for the same
// loss (a node's partitions moved in more than one round).
func (l *Leader) recordLosses(ctx context.Context, key string, term int64, losses []Loss) error {
	if len(losses) == 0 {
		return nil
	}
	lease, err := l.client.Grant(ctx, int64(lossTTL/time.Second))
	if err != nil {
		return fmt.Errorf("record lost nodes: %w", err)
	}
	for _, loss := range losses {
		k := l.keys.Lost(loss.Node, l.cfg.DC)
		resp, err := l.client.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("record lost nodes: %w", err)
		}
		if len(resp.Kvs) > 0 {
			var prev Loss
			if json.Unmarshal(resp.Kvs[0].Value, &prev) == nil && loss.At-prev.At < time.Minute.Milliseconds() {
				loss.At = min(loss.At, prev.At)
				for n, c := range prev.Moved {
					loss.Moved[n] += c
				}
			}
		}
		b, _ := json.Marshal(loss)
		tr, err := l.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", term)).
			Then(clientv3.OpPut(k, string(b), clientv3.WithLease(lease.ID))).Commit()
		if err != nil {
			return fmt.Errorf("record lost nodes: %w", err)
		}
		if !tr.Succeeded {
			return errDeposed
		}
		l.log.Info("node lost: partitions reassigned", "lost", loss.Node, "lost_dc", loss.DC,
			"partitions", loss.Partitions(), "to", loss.MovedText(), "lost_at", time.UnixMilli(loss.At).UTC())
	}
	return nil
}

// Partitions is how many partitions were moved off the lost node.
func (l Loss) Partitions() int {
	n := 0
	for _, c := range l.Moved {
		n += c
	}
	return n
}

// MovedText says where the partitions went: "dc1-n1 (32), dc1-n3 (32)".
func (l Loss) MovedText() string {
	nodes := make([]string, 0, len(l.Moved))
	for n := range l.Moved {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = fmt.Sprintf("%s (%d)", n, l.Moved[n])
	}
	return strings.Join(parts, ", ")
}

// History is what the leaders published: their records by data center and
// the lost nodes of the last hour, merged per node.
type History struct {
	Records map[string]Record
	Lost    []Loss
}

// ReadHistory reads the leaders' records and the lost-node records in one
// revision.
func ReadHistory(ctx context.Context, kv clientv3.KV, keys keyspace.Space) (History, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(keys.LeaderRecordsPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(keys.LostPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return History{}, fmt.Errorf("read leader records: %w", err)
	}
	h := History{Records: map[string]Record{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && r.DC != "" {
			h.Records[r.DC] = r
		}
	}
	lost := map[string]*Loss{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var r Loss
		if json.Unmarshal(kv.Value, &r) != nil || r.Node == "" {
			continue
		}
		m := lost[r.Node]
		if m == nil || abs(m.At-r.At) >= time.Minute.Milliseconds() {
			// The first record of this node, or of a later loss.
			if m == nil || r.At > m.At {
				r.Moved = maps.Clone(r.Moved)
				lost[r.Node] = &r
			}
			continue
		}
		m.At = min(m.At, r.At)
		for n, c := range r.Moved {
			m.Moved[n] += c
		}
	}
	for _, l := range lost {
		h.Lost = append(h.Lost, *l)
	}
	sort.Slice(h.Lost, func(i, j int) bool { return h.Lost[i].Node < h.Lost[j].Node })
	return h, nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
