package bench

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestObjectsTinyRun activates 300 objects on a two-node cluster and checks
// the row: every object counted, heap and RSS read, and the verdict agrees
// with the number (no timing or size is asserted).
func TestObjectsTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	rep, err := Run(ctx, []Scenario{ObjectsScenario{Objects: 300}}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)
	var row *Result
	for i, r := range rep.Results {
		if r.Scenario == "objects" {
			row = &rep.Results[i]
		}
	}
	require.NotNil(t, row)
	require.Equal(t, "memory per parked object", row.Case)
	require.EqualValues(t, 300, row.Count)
	require.Zero(t, row.Errors)
	require.Positive(t, row.Extra["rss_MB"])
	require.InDelta(t, row.Rate*300/(1<<20), row.Extra["heap_growth_MB"], 1e-9, "bytes per object are the heap's growth over the objects")
	require.Equal(t, row.Rate <= targetBytesPerParked, row.Target.Met)

	_, err = ObjectsScenario{Objects: -1}.Run(ctx, &Env{Profile: tiny()})
	require.ErrorContains(t, err, "must be positive")
}
