package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// twoDCs is a status with partitions 0, 1 homed in a and 2, 3 in b, each
// managed and owned as given: "dc:node" or "dc:node/owner" (owner differs
// from the assigned node; "-" for none).
func twoDCs(placed ...string) *durablev1.StatusResponse {
	st := &durablev1.StatusResponse{Nodes: []*durablev1.NodeStatus{{Id: "a1"}, {Id: "b1"}}}
	for p, s := range placed {
		dc, rest, _ := strings.Cut(s, ":")
		node, owner, moving := strings.Cut(rest, "/")
		if !moving {
			owner = node
		}
		if owner == "-" {
			owner = ""
		}
		st.Partitions = append(st.Partitions, &durablev1.PartitionStatus{
			Partition: int32(p), HomeDc: []string{"a", "a", "b", "b"}[p], ManagedByDc: dc, AssignedNode: node, Owner: owner,
		})
	}
	return st
}

func TestWaitConditions(t *testing.T) {
	home := twoDCs("a:a1", "a:a1", "b:b1", "b:b1")
	moving := twoDCs("a:a1", "a:a1", "b:b1/-", "b:b1")
	adopted := twoDCs("a:a1", "a:a1", "a:a1", "a:a1")
	adopting := twoDCs("a:a1", "a:a1", "a:a1/-", "b:b1")
	lost := twoDCs("a:a1", "a:a1", "a:a1", "a:a1")
	lost.Nodes = lost.Nodes[:1]
	lost.LostNodes = []*durablev1.LostNode{{Id: "b1", Dc: "b", MovedTo: map[string]int32{"a1": 2}}}
	waiting := twoDCs("a:a1", "a:a1", "b:b1/-", "b:b1/-")
	waiting.Nodes = waiting.Nodes[:1]
	waiting.LostNodes = []*durablev1.LostNode{{Id: "b1", Dc: "b", Waiting: 2}}

	for _, tc := range []struct {
		cond string
		st   *durablev1.StatusResponse
		ok   bool
		why  string
	}{
		{"settled", home, true, ""},
		{"settled", moving, false, "partition 2 is owned by nobody, assigned to b1"},
		{"settled", &durablev1.StatusResponse{}, false, "no partitions"},
		{"home", home, true, ""},
		{"home", adopted, false, "partition 2 is managed by a, away from its home b"},
		{"adopted=b", adopted, true, ""},
		{"adopted=b", adopting, false, "partition 3 is still managed by b"},
		{"adopted=b", home, false, "partition 2 is still managed by b"},
		{"adopted=c", home, false, `no partition has its home in "c"`},
		{"nodes=2", home, true, ""},
		{"nodes=2", lost, false, "1 live nodes, not 2"},
		{"lost=b1", lost, true, ""},
		{"lost=b1", home, false, "b1 is not lost"},
		{"lost=b1", waiting, false, "b1 is gone; 2 of its partitions wait for a new node"},
	} {
		t.Run(tc.cond, func(t *testing.T) {
			conds, err := parseConditions([]string{tc.cond})
			require.NoError(t, err)
			ok, why := conds[0].test(tc.st)
			require.Equal(t, tc.ok, ok, why)
			if !tc.ok {
				require.Equal(t, tc.why, why)
			}
		})
	}
	for _, bad := range []string{"", "settled=1", "adopted", "adopted=", "nodes=x", "nodes=-1", "lost", "soon"} {
		_, err := parseConditions([]string{bad})
		require.Error(t, err, "%q accepted", bad)
	}
}

func TestDataCenterStateReadsAsASentence(t *testing.T) {
	ago := func(d time.Duration) int64 { return time.Now().Add(-d).UnixMilli() }
	for _, tc := range []struct {
		d    *durablev1.DataCenterStatus
		want string
	}{
		{&durablev1.DataCenterStatus{LiveNodes: 2}, "up"},
		{&durablev1.DataCenterStatus{DownSinceUnixMs: ago(4 * time.Second), AdoptionInMs: 6000}, "down 4s; adopted in 6s"},
		{&durablev1.DataCenterStatus{DownSinceUnixMs: ago(14 * time.Second), Away: 128, AdoptedBy: []string{"dc1"}}, "down 14s; adopted by dc1"},
		{&durablev1.DataCenterStatus{}, "down"},
		{&durablev1.DataCenterStatus{LiveNodes: 2, UpSinceUnixMs: ago(6 * time.Second), Away: 128, HomeInMs: 4000}, "back 6s; 128 partitions go home in 4s"},
		{&durablev1.DataCenterStatus{LiveNodes: 2, UpSinceUnixMs: ago(11 * time.Second), Away: 3}, "back 11s; 3 partitions going home"},
	} {
		require.Equal(t, tc.want, dcState(tc.d))
	}
}
