package bench

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// synthetic returns a report whose rows have the given ratios to their
// ceilings (absolute rates made up: only ratios count).
func synthetic(ratios map[string]float64) *Report {
	rep := &Report{Started: time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC), Params: Params{Profile: "short"}}
	for _, c := range []string{"get via owner", "increment via owner", "increment via non-owner", "brand new case"} {
		r, ok := ratios[c]
		if !ok {
			continue
		}
		res := Result{Scenario: "invoke", Case: c, Concurrency: 64, Transport: Plaintext, Rate: 1000 * r, Unit: "ops/s"}
		res.Ceiling("etcd 1-put txn c=64", 1000)
		rep.Results = append(rep.Results, res)
	}
	// A row without a ceiling is not compared.
	rep.Results = append(rep.Results, Result{Scenario: "etcd", Case: "put, 1 per txn", Rate: 5000, Unit: "puts/s"})
	return rep
}

func TestBaselineCheckFailsOnlyBelowHalfTheRatio(t *testing.T) {
	base := NewBaseline(synthetic(map[string]float64{
		"get via owner": 0.5, "increment via owner": 0.5, "increment via non-owner": 0.3,
	}), "abc1234")
	require.Len(t, base.Rows, 3, "rows without a ceiling are not in the baseline")
	require.Equal(t, "invoke / get via owner / plaintext / c=64", base.Rows[0].Row)
	require.Equal(t, "etcd 1-put txn c=64", base.Rows[0].Ceiling)

	// The file round-trips.
	var buf bytes.Buffer
	require.NoError(t, base.WriteJSON(&buf))
	path := t.TempDir() + "/baseline.json"
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	base, err := ReadBaseline(path)
	require.NoError(t, err)
	require.Equal(t, "abc1234", base.Commit)

	for _, tc := range []struct {
		name   string
		now    map[string]float64
		failed bool
		want   map[string]string
	}{
		{"a 0.4× drop fails", map[string]float64{"get via owner": 0.2, "increment via owner": 0.5, "increment via non-owner": 0.3},
			true, map[string]string{"get via owner": CheckRegressed, "increment via owner": CheckOK}},
		{"a 0.6× drop passes", map[string]float64{"get via owner": 0.3, "increment via owner": 0.5, "increment via non-owner": 0.3},
			false, map[string]string{"get via owner": CheckOK}},
		{"a faster row passes", map[string]float64{"get via owner": 2.5, "increment via owner": 0.5, "increment via non-owner": 0.3},
			false, map[string]string{"get via owner": CheckOK}},
		{"missing and new rows are reported, not failures", map[string]float64{"get via owner": 0.5, "increment via owner": 0.5, "brand new case": 0.1},
			false, map[string]string{"increment via non-owner": CheckGone, "brand new case": CheckNew}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompareBaseline(base, synthetic(tc.now))
			require.Equal(t, tc.failed, c.Failed())
			got := map[string]string{}
			for _, r := range c.Rows {
				got[r.Row] = r.Verdict
			}
			for cs, v := range tc.want {
				require.Equal(t, v, got["invoke / "+cs+" / plaintext / c=64"], cs)
			}
			var out bytes.Buffer
			require.NoError(t, c.WriteTable(&out, base))
			require.Contains(t, out.String(), "commit abc1234")
			require.Contains(t, out.String(), "rows compared")
		})
	}
	c := CompareBaseline(base, synthetic(map[string]float64{"get via owner": 0.2, "increment via owner": 0.5, "increment via non-owner": 0.3}))
	require.Equal(t, 1, c.Regressions)
	require.InDelta(t, 0.4, c.Rows[0].Change, 1e-9)
}

func TestRowKeysAreUniqueWithinAReport(t *testing.T) {
	rep := synthetic(map[string]float64{"get via owner": 0.5})
	rep.Results = append(rep.Results, rep.Results[0])
	rows := ratios(rep)
	require.Len(t, rows, 2)
	require.Equal(t, rows[0].Row+" #2", rows[1].Row)
}
