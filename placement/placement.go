// Package placement owns partition metadata and ownership in etcd: the
// cluster's partition count (meta/cluster), node registrations (nodes/<id>)
// and partition ownership (owner/<p>).
//
// Ownership invariant: owner/<p> is put only when absent, on the owner's
// lease, so its CreateRevision is unique per tenure and serves as the fencing
// token. Every write for partition p must carry Fence(p, token) as a Txn
// compare; a node whose lease expired or whose key was deleted can therefore
// never write again under the old token.
//
// The functions here are stateless; the node package runs the loops.
package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
)

var (
	// ErrOwned means the partition already has an owner.
	ErrOwned = errors.New("placement: partition already owned")
	// ErrNodeIDInUse means another live process registered the node id.
	ErrNodeIDInUse = errors.New("placement: node id already in use by a live node")
)

// Meta is the cluster metadata written once when the cluster is created.
type Meta struct {
	Partitions int `json:"partitions"`
	Version    int `json:"version"`
	// HomeDCs lists the data centers partitions are homed in: partition p's
	// home is HomeDCs[p % len(HomeDCs)].
	HomeDCs []string `json:"home_dcs"`
}

// Home returns partition p's home data center.
func (m Meta) Home(p int) string { return m.HomeDCs[p%len(m.HomeDCs)] }

// EnsureCluster returns the cluster's metadata, creating it with partitions
// homed in homeDCs if the cluster is new. The stored value wins over the
// arguments: neither the partition count nor the homes can change once
// objects are placed.
func EnsureCluster(ctx context.Context, kv clientv3.KV, keys keyspace.Space, partitions int, homeDCs []string) (Meta, error) {
	if len(homeDCs) == 0 {
		return Meta{}, errors.New("placement: a cluster needs at least one home data center")
	}
	want := Meta{Partitions: partitions, Version: 1, HomeDCs: homeDCs}
	b, _ := json.Marshal(want)
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keys.Meta()), "=", 0)).
		Then(clientv3.OpPut(keys.Meta(), string(b))).
		Else(clientv3.OpGet(keys.Meta())).
		Commit()
	if err != nil {
		return Meta{}, fmt.Errorf("placement: read cluster metadata: %w", err)
	}
	if resp.Succeeded {
		return want, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return Meta{}, errors.New("placement: cluster metadata vanished while read")
	}
	var m Meta
	if err := json.Unmarshal(kvs[0].Value, &m); err != nil || m.Partitions <= 0 || len(m.HomeDCs) == 0 {
		return Meta{}, fmt.Errorf("placement: corrupt cluster metadata %q", kvs[0].Value)
	}
	return m, nil
}

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

// Fence is the compare every write of partition p makes under token.
func Fence(keys keyspace.Space, p int, token int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(keys.Owner(p)), "=", token)
}

// Claim makes node the owner of p on lease if p has no owner, returning the
// fencing token. If p is owned, it returns ErrOwned and the owner's id.
func Claim(ctx context.Context, kv clientv3.KV, keys keyspace.Space, p int, node string, lease clientv3.LeaseID) (int64, string, error) {
	key := keys.Owner(p)
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, node, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, "", fmt.Errorf("placement: claim partition %d: %w", p, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, node, nil
	}
	owner := ""
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		owner = string(kvs[0].Value)
	}
	return 0, owner, fmt.Errorf("%w: partition %d by %q", ErrOwned, p, owner)
}

// Release deletes owner/<p> if it is still the tenure identified by token.
func Release(ctx context.Context, kv clientv3.KV, keys keyspace.Space, p int, token int64) error {
	_, err := kv.Txn(ctx).If(Fence(keys, p, token)).Then(clientv3.OpDelete(keys.Owner(p))).Commit()
	if err != nil {
		return fmt.Errorf("placement: release partition %d: %w", p, err)
	}
	return nil
}

// Owners reads every owner key: partition → (node, token).
func Owners(ctx context.Context, kv clientv3.KV, keys keyspace.Space) (map[int]Owner, error) {
	resp, err := kv.Get(ctx, keys.OwnerPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[int]Owner, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		p, ok := keyspace.ParsePartitionKey(string(kv.Key), keys.OwnerPrefix())
		if !ok {
			continue
		}
		out[p] = Owner{Node: string(kv.Value), Token: kv.CreateRevision}
	}
	return out, nil
}

// Owner is the current holder of a partition.
type Owner struct {
	Node  string
	Token int64
}
