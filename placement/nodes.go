package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
)

// NodeInfo is a node's registration.
type NodeInfo struct {
	ID       string `json:"-"`
	DC       string `json:"dc"`
	Address  string `json:"address"`
	Draining bool   `json:"draining,omitempty"`
	// Classes are the classes the node serves, sorted and joined by ","
	// (a string keeps NodeInfo comparable); "" for a node that did not
	// say (an older version), which counts as serving every class.
	Classes string `json:"classes,omitempty"`
	// Records is the newest format of stored records (alarms, dead
	// letters, request rings) the node reads: RecordsVersion, or 0 for a
	// node of an earlier version, which reads their JSON only.
	Records int `json:"records,omitempty"`
}

// RecordsVersion is the record format of this version: binary.
const RecordsVersion = 1

// JoinClasses is the Classes field of a node serving names.
func JoinClasses(names []string) string {
	s := slices.Clone(names)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

// ClassList returns the classes the node serves (nil when it did not say).
func (n NodeInfo) ClassList() []string {
	if n.Classes == "" {
		return nil
	}
	return strings.Split(n.Classes, ",")
}

// Serves reports whether the node serves every class of required (a node
// that did not say serves all).
func (n NodeInfo) Serves(required []string) bool {
	if n.Classes == "" {
		return true
	}
	have := n.ClassList()
	for _, c := range required {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

// Missing returns the classes of required the node does not serve.
func (n NodeInfo) Missing(required []string) []string {
	if n.Classes == "" {
		return nil
	}
	have := n.ClassList()
	var out []string
	for _, c := range required {
		if !slices.Contains(have, c) {
			out = append(out, c)
		}
	}
	return out
}

// Register puts nodes/<id> on lease, failing with ErrNodeIDInUse when a live
// registration with that id exists under another lease.
func Register(ctx context.Context, kv clientv3.KV, keys keyspace.Space, info NodeInfo, lease clientv3.LeaseID) error {
	b, _ := json.Marshal(info)
	key := keys.Node(info.ID)
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("placement: register node: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) == lease {
		_, err := kv.Put(ctx, key, string(b), clientv3.WithLease(lease))
		return err
	}
	return fmt.Errorf("%w: %q", ErrNodeIDInUse, info.ID)
}

// ParseNode decodes a registration value.
func ParseNode(id string, v []byte) (NodeInfo, error) {
	var n NodeInfo
	if err := json.Unmarshal(v, &n); err != nil {
		return NodeInfo{}, fmt.Errorf("placement: corrupt registration of %s: %w", id, err)
	}
	n.ID = id
	return n, nil
}
