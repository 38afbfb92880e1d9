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
