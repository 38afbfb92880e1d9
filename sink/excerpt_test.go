package sink

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// TestExcerptShowsTheStartOfABody: a delivery's log line shows short text
// whole, long text cut at a rune boundary, and binary as its size.
func TestExcerptShowsTheStartOfABody(t *testing.T) {
	long := strings.Repeat("é", excerptBytes) // two bytes a rune: the cut falls inside one
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", "", ""},
		{"short JSON", `{"message":"hello"}`, `{"message":"hello"}`},
		{"long text", long, strings.Repeat("é", excerptBytes/2) + "…"},
		{"binary", "\x82\x00\xff", "(3 bytes of binary)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := excerpt([]byte(tc.body))
			require.Equal(t, tc.want, got)
			require.True(t, utf8.ValidString(got))
		})
	}
}
