package agent

import (
	"errors"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// FuzzPurgeFilter: the validation of a purge request never panics, refuses
// with InvalidArgument or UnknownClass (as a status that marshals), and
// never turns a request that did not ask for all into a filter that selects
// every dead letter.
func FuzzPurgeFilter(f *testing.F) {
	id := durable.IDFromName("Batcher", "foo").String()
	f.Add(false, "", false, "", "", int64(0))
	f.Add(true, "", false, "", "", int64(0))
	f.Add(true, "Batcher", false, "", "", int64(0))
	f.Add(false, "Batcher", true, "foo", "", int64(0))
	f.Add(false, "", true, "foo", "", int64(0))
	f.Add(false, "Batcher", true, "", id, int64(0))
	f.Add(false, "Batcher", true, "", "", int64(0))
	f.Add(false, "Counter", true, "", id, int64(0))
	f.Add(false, "", false, "", "", int64(-5))
	f.Add(false, "", false, "", "", int64(1<<63-1))
	f.Add(false, "C\x82", true, "\x82", "", int64(1))
	f.Fuzz(func(t *testing.T, all bool, class string, hasObject bool, name, idHex string, abandonedMS int64) {
		req := &durablev1.PurgeDeadLettersRequest{All: all, Class: class, AbandonedBeforeUnixMs: abandonedMS}
		if hasObject {
			// A reference is a name or an id (a oneof): a name when given.
			req.Object = &durablev1.ObjectRef{}
			switch {
			case name != "":
				req.Object.Ref = &durablev1.ObjectRef_Name{Name: name}
			case idHex != "":
				req.Object.Ref = &durablev1.ObjectRef_Id{Id: idHex}
			}
		}
		pf, err := purgeFilter(req, durable.NewLayout(16, []string{"dc1"}))
		if err != nil {
			if !errors.Is(err, durable.ErrInvalidArgument) && !errors.Is(err, durable.ErrUnknownClass) {
				t.Fatalf("purgeFilter(%v) = %v", req, err)
			}
			if _, merr := proto.Marshal(status.Convert(node.ToStatus(err, "")).Proto()); merr != nil {
				t.Fatalf("status of %v does not marshal: %v", err, merr)
			}
			return
		}
		everything := pf.Class == "" && pf.ID == (durable.ID{}) && pf.AbandonedBefore.IsZero()
		if all != everything {
			t.Fatalf("purgeFilter(%v) = %+v: all = %v, selects everything = %v", req, pf, all, everything)
		}
		if hasObject && pf.ID == (durable.ID{}) {
			t.Fatalf("purgeFilter(%v) dropped the object", req)
		}
		if pf.Partitions != 16 {
			t.Fatalf("partitions %d", pf.Partitions)
		}
	})
}

// FuzzListFilter: a listing request's limit is always within [1, 10000]
// and its due bound is a time after the epoch or none.
func FuzzListFilter(f *testing.F) {
	f.Add(int32(0), int64(0), "", "")
	f.Add(int32(-1), int64(-1), "C", "due:x")
	f.Add(int32(1<<31-1), int64(1<<63-1), "C\x82", "\x82")
	f.Fuzz(func(t *testing.T, limit int32, dueBefore int64, class, token string) {
		lf := listFilter(&durablev1.ListAlarmsRequest{Limit: limit, DueBeforeUnixMs: dueBefore, Class: class, PageToken: token}, 8)
		if lf.Limit < 1 || lf.Limit > 10000 {
			t.Fatalf("limit %d from %d", lf.Limit, limit)
		}
		if !lf.DueBefore.IsZero() && lf.DueBefore.UnixMilli() <= 0 {
			t.Fatalf("due before %v from %d", lf.DueBefore, dueBefore)
		}
		if lf.Class != class || lf.After != token || lf.Partitions != 8 {
			t.Fatalf("filter %+v", lf)
		}
	})
}
