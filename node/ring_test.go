package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRequestRingRoundTripsAndReadsTheJSONOfEarlierVersions(t *testing.T) {
	ring := []reqEntry{
		{ID: NewRequestID(), Reply: []byte(`{"value":7}`), Digest: callDigest("increment", []byte("1"))},
		{ID: "call-" + strings.Repeat("ab", 16), Reply: nil, Digest: callDigest("get", nil)},
		{ID: "client-chose-this", Dropped: true, Digest: callDigest("big", nil)},
		{ID: "DEADBEEF", Reply: []byte{0, 1, 2}}, // upper-case hex stays as given; no digest (old entry)
	}
	got, err := decodeRing(encodeRing(nil, ring))
	require.NoError(t, err)
	require.Equal(t, ring, got)

	old, err := json.Marshal(ring)
	require.NoError(t, err)
	got, err = decodeRing(old)
	require.NoError(t, err)
	require.Equal(t, ring, got, "a ring written as JSON by an earlier version is read")

	// Full ring of client requests: the binary record is well under half
	// the JSON one.
	full := make([]reqEntry, requestRing)
	for i := range full {
		full[i] = reqEntry{ID: NewRequestID(), Reply: []byte(`{"value":12345}`), Digest: callDigest("increment", nil)}
	}
	js, _ := json.Marshal(full)
	bin := encodeRing(nil, full)
	t.Logf("ring of %d: JSON %d B, binary %d B", requestRing, len(js), len(bin))
	require.Less(t, 2*len(bin), len(js))

	for _, bad := range [][]byte{nil, {9}, {ringVersion, ringDigest, 1, 'x'}, {ringVersion, 0, 5, 'a'}, {ringVersion, ringHexID, 0, 0}} {
		_, err := decodeRing(bad)
		require.Error(t, err, "%v", bad)
	}
}

// BenchmarkRequestRing: the cost of writing a full ring, as every writing
// event does, in the binary form and in the JSON it replaced.
func BenchmarkRequestRing(b *testing.B) {
	full := make([]reqEntry, requestRing)
	for i := range full {
		full[i] = reqEntry{ID: NewRequestID(), Reply: []byte(`{"value":12345}`), Digest: callDigest("increment", nil)}
	}
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = string(encodeRing(nil, full))
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, _ := json.Marshal(full)
			_ = string(v)
		}
	})
}

// TestDecodeRequestRingShowsWhatTheRingHolds: the exported reader (for
// `durable inspect`) gives the entries the ring stores, and refuses a
// corrupt record with an error that says what it is.
func TestDecodeRequestRingShowsWhatTheRingHolds(t *testing.T) {
	ring := []reqEntry{
		{ID: NewRequestID(), Reply: []byte(`{"value":7}`), Digest: callDigest("increment", nil)},
		{ID: "call-x", Dropped: true},
	}
	got, err := DecodeRequestRing(encodeRing(nil, ring))
	require.NoError(t, err)
	require.Equal(t, []RequestEntry{
		{ID: ring[0].ID, Reply: ring[0].Reply, Digest: ring[0].Digest},
		{ID: "call-x", Dropped: true},
	}, got)
	_, err = DecodeRequestRing([]byte{9})
	require.ErrorContains(t, err, "node: corrupt request ring")
}
