package placement

import (
	"context"
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
