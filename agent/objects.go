package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// Listing objects reads the obj/<p>/<class>/<id> keys (the name an object
// was created under, written in its first commit) in key order: partition,
// then ID. A page is exact — it holds limit objects unless fewer are left,
// and it has a next page only if objects follow — and costs a few round
// trips whatever the number of objects: one Txn of count-only ranges over
// the partitions (64 to a Txn, below etcd's default --max-txn-ops of 128),
// then one read, at the counts' revision, of exactly the keys the page
// holds.

// objectsTokenTag starts a ListObjects page token: "obj:<p>/<id>", the last
// object of the page.
const objectsTokenTag = "obj:"

// objectsPerTxn bounds the ranges of one Txn.
const objectsPerTxn = 64

func (s *adminServer) ListObjects(ctx context.Context, req *durablev1.ListObjectsRequest) (*durablev1.ListObjectsResponse, error) {
	out, err := listObjects(ctx, s.a.client, s.a.keys, s.a.meta.Partitions, req)
	if err != nil {
		return nil, node.ToStatus(listErr(err), "")
	}
	return out, nil
}

// objectsPlace is where a listing resumes: after object id of partition p.
type objectsPlace struct {
	p  int
	id string // "": from the partition's start
}

// parseObjectsToken checks a page token against class and the cluster's
// partition count.
func parseObjectsToken(token, class string, partitions int) (objectsPlace, error) {
	if token == "" {
		return objectsPlace{}, nil
	}
	bad := durable.Invalidf("page token %.80q is not one a listing of class %q returned", token, class)
	rest, ok := strings.CutPrefix(token, objectsTokenTag)
	if !ok {
		return objectsPlace{}, bad
	}
	ps, hexID, ok := strings.Cut(rest, "/")
	p, err := strconv.Atoi(ps)
	if !ok || err != nil || p < 0 || p >= partitions {
		return objectsPlace{}, bad
	}
	// The ID's checksum binds it to its class: a token of another class's
	// listing is refused.
	if _, err := durable.IDFromString(class, hexID); err != nil {
		return objectsPlace{}, bad
	}
	return objectsPlace{p: p, id: hexID}, nil
}

// txnRanges runs ranges, objectsPerTxn to a Txn, at revision rev (0: the
// first Txn's) and returns their responses and the revision.
func txnRanges(ctx context.Context, kv clientv3.KV, ranges []clientv3.Op, rev int64) ([]*clientv3.GetResponse, int64, error) {
	out := make([]*clientv3.GetResponse, 0, len(ranges))
	for lo := 0; lo < len(ranges); lo += objectsPerTxn {
		resp, err := kv.Txn(ctx).Then(ranges[lo:min(lo+objectsPerTxn, len(ranges))]...).Commit()
		if err != nil {
			return nil, 0, err
		}
		for _, r := range resp.Responses {
			out = append(out, (*clientv3.GetResponse)(r.GetResponseRange()))
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
	}
	return out, rev, nil
}

// listObjects returns a page of the objects of req's class.
func listObjects(ctx context.Context, kv clientv3.KV, keys keyspace.Space, partitions int, req *durablev1.ListObjectsRequest) (*durablev1.ListObjectsResponse, error) {
	class := req.GetClass()
	switch {
	case class == "":
		return nil, durable.Invalidf("list objects: a class is required")
	case strings.Contains(class, "/"):
		return nil, durable.Invalidf("list objects: class %q contains '/'", class)
	case req.GetLimit() < 0:
		return nil, durable.Invalidf("list objects: limit %d is negative (0 means the default, 100)", req.GetLimit())
	}
	limit := clampLimit(req.GetLimit(), 100, 10000)
	from, err := parseObjectsToken(req.GetPageToken(), class, partitions)
	if err != nil {
		return nil, err
	}
	start := func(p int) string {
		if p == from.p && from.id != "" {
			return keys.Object(p, class, from.id) + "\x00"
		}
		return keys.ObjectsPrefix(p, class)
	}
	end := func(p int) string { return keyspace.PrefixEnd(keys.ObjectsPrefix(p, class)) }

	// How many objects each partition holds from the place on. Every
	// read of the revision may fail as compacted only if it is older than
	// etcd's compaction: the listing is then Unavailable, and retried.
	counts := make([]clientv3.Op, 0, partitions-from.p)
	for p := from.p; p < partitions; p++ {
		counts = append(counts, clientv3.OpGet(start(p), clientv3.WithRange(end(p)), clientv3.WithCountOnly()))
	}
	cresps, rev, err := txnRanges(ctx, kv, counts, 0)
	if err != nil {
		return nil, err
	}
	// The page: the first limit objects in partition order.
	var reads []clientv3.Op
	var readP []int
	taken, more := 0, false
	for i, r := range cresps {
		if r.Count == 0 {
			continue
		}
		if taken == limit {
			more = true
			break
		}
		p := from.p + i
		n := min(r.Count, int64(limit-taken))
		reads = append(reads, clientv3.OpGet(start(p), clientv3.WithRange(end(p)), clientv3.WithLimit(n), clientv3.WithRev(rev)))
		readP = append(readP, p)
		taken += int(n)
		if n < r.Count {
			more = true
			break
		}
	}
	rresps, _, err := txnRanges(ctx, kv, reads, rev)
	if err != nil {
		return nil, err
	}
	out := &durablev1.ListObjectsResponse{}
	last := objectsPlace{}
	for i, r := range rresps {
		prefix := keys.ObjectsPrefix(readP[i], class)
		for _, kv := range r.Kvs {
			hexID := strings.TrimPrefix(string(kv.Key), prefix)
			if _, err := durable.IDFromString(class, hexID); err != nil {
				continue // not written by the runtime
			}
			last = objectsPlace{p: readP[i], id: hexID}
			o := &durablev1.ObjectInfo{Class: class, Id: hexID, Partition: int32(readP[i])}
			if name := string(kv.Value); utf8.ValidString(name) {
				o.Name = name
			} else {
				o.NameBytes = kv.Value
			}
			out.Objects = append(out.Objects, o)
		}
	}
	if more && last.id != "" {
		out.NextPageToken = fmt.Sprintf("%s%d/%s", objectsTokenTag, last.p, last.id)
	}
	return out, nil
}
