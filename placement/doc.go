// Package placement owns where partitions live: the cluster's metadata
// (meta/cluster: partition count, home data centers), node registrations
// (nodes/<id>), the leaders' assignments (assign/<p>, read here, planned by
// package leader) and partition ownership (owner/<p>), and it runs one
// node's membership (Member): the lease and its keep-alive, the local lease
// deadline, the watched view of the cluster, claims, graceful handoffs and
// drain.
//
// Ownership invariant: owner/<p> is put only when absent, on the owner's
// lease, so its CreateRevision is unique per tenure and serves as the
// fencing token. Every write for partition p must carry Fence(p, token) as a
// Txn compare; a node whose lease expired or whose key was deleted can
// therefore never write again under the old token.
//
// Zombie invariant: a node serves only while LeaseValid — before the time
// its last successful keep-alive was sent plus the TTL, less a margin — so
// a paused or cut-off node stops before etcd can expire its lease and let
// another node claim its partitions.
//
// This package never runs objects or alarms: a Member asks its Host (the
// node) to serve, quiesce and drop partitions. It never decides the
// assignments: the leader of each data center writes them.
package placement
