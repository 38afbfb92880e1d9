package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
)

// Assignment is the desired placement of one partition: the value of
// assign/<p>. Only the leader of DC writes it while DC manages the partition;
// handing it to another data center (adoption, failback) is a write that
// changes DC.
type Assignment struct {
	// Home is the partition's home data center, fixed when the cluster was
	// created.
	Home string `json:"home"`
	// DC is the data center whose leader manages the partition: Home, or
	// the adopter while Home is down.
	DC string `json:"dc"`
	// Node is the node that should own the partition, "" for none yet.
	Node string `json:"node,omitempty"`
	// At is when this assignment was written (Unix milliseconds), By the
	// leader that wrote it and Term that leader's election revision.
	At   int64  `json:"at"`
	By   string `json:"by,omitempty"`
	Term int64  `json:"term,omitempty"`

	// Rev is the mod revision the assignment was read at, 0 if absent; the
	// write that replaces it compares it.
	Rev int64 `json:"-"`
}

// Adopted reports whether the partition is managed away from home.
func (a Assignment) Adopted() bool { return a.DC != a.Home }

// ParseAssignment decodes the value of assign/<p> read at mod revision rev.
func ParseAssignment(v []byte, rev int64) (Assignment, error) {
	var a Assignment
	if err := json.Unmarshal(v, &a); err != nil || a.Home == "" || a.DC == "" {
		return Assignment{}, fmt.Errorf("placement: corrupt assignment %q", v)
	}
	a.Rev = rev
	return a, nil
}

// Encode returns the stored form of a.
func (a Assignment) Encode() string {
	b, _ := json.Marshal(a)
	return string(b)
}

// Snapshot is the cluster's placement as read from etcd in one revision:
// live registrations, the leaders' assignments and the owner keys. The
// leader plans over it; members and status start from it.
type Snapshot struct {
	Meta   Meta
	Nodes  map[string]NodeInfo // live registrations
	Assign map[int]Assignment
	Owners map[int]Owner
	// Classes are the classes a node must serve to own partitions (nil:
	// not set yet); ClassesRev the mod revision they were read at (0:
	// absent).
	Classes    []string
	ClassesRev int64
	Revision   int64 // the etcd revision Nodes, Assign and Owners were read at
}

// Eligible reports whether node id may be assigned partitions: it is live,
// not draining, and serves every required class.
func (v Snapshot) Eligible(id string) bool {
	ni, ok := v.Nodes[id]
	return ok && !ni.Draining && ni.Serves(v.Classes)
}

// Read loads a Snapshot in one revision.
func Read(ctx context.Context, kv clientv3.KV, keys keyspace.Space, meta Meta) (Snapshot, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(keys.NodesPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(keys.AssignPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(keys.OwnerPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(keys.Classes()),
	).Commit()
	if err != nil {
		return Snapshot{}, fmt.Errorf("placement: read cluster: %w", err)
	}
	v := Snapshot{
		Meta: meta, Nodes: map[string]NodeInfo{}, Assign: map[int]Assignment{}, Owners: map[int]Owner{},
		Revision: resp.Header.Revision,
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), keys.NodesPrefix())
		if ni, err := ParseNode(id, kv.Value); err == nil {
			v.Nodes[id] = ni
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if p, ok := keyspace.ParsePartitionKey(string(kv.Key), keys.AssignPrefix()); ok {
			a, err := ParseAssignment(kv.Value, kv.ModRevision)
			if err != nil {
				return Snapshot{}, err
			}
			v.Assign[p] = a
		}
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if p, ok := keyspace.ParsePartitionKey(string(kv.Key), keys.OwnerPrefix()); ok {
			v.Owners[p] = Owner{Node: string(kv.Value), Token: kv.CreateRevision}
		}
	}
	if kvs := resp.Responses[3].GetResponseRange().Kvs; len(kvs) > 0 {
		v.ClassesRev = kvs[0].ModRevision
		if len(kvs[0].Value) > 0 {
			v.Classes = strings.Split(string(kvs[0].Value), ",")
		} else {
			v.Classes = []string{}
		}
	}
	return v, nil
}
