package placement

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
)

// NodeInfo is a node's registration.
type NodeInfo struct {
	ID       string `json:"-"`
	DC       string `json:"dc"`
	Address  string `json:"address"`
	Draining bool   `json:"draining,omitempty"`
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
