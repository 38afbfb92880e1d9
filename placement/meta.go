package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/keyspace"
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
	// Read first: a cluster whose etcd is full (NOSPACE refuses every
	// write, a Txn with a put included) must still start.
	if got, err := kv.Get(ctx, keys.Meta()); err != nil {
		return Meta{}, fmt.Errorf("placement: read cluster metadata: %w", err)
	} else if len(got.Kvs) > 0 {
		return decodeMeta(got.Kvs[0].Value)
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
	return decodeMeta(kvs[0].Value)
}

func decodeMeta(v []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(v, &m); err != nil || m.Partitions <= 0 || len(m.HomeDCs) == 0 {
		return Meta{}, fmt.Errorf("placement: corrupt cluster metadata %.100q", v)
	}
	return m, nil
}
