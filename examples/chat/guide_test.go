package chat_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGuideQuotesTheExample: every Go block of docs/guide.md marked
// "<!-- quote: PATH -->" appears verbatim in PATH, so the guide cannot drift
// from the code that compiles and is tested.
func TestGuideQuotesTheExample(t *testing.T) {
	root := filepath.Join("..", "..")
	guide, err := os.ReadFile(filepath.Join(root, "docs", "guide.md"))
	require.NoError(t, err)
	quote := regexp.MustCompile("(?s)<!-- quote: (\\S+) -->\n```go\n(.*?)```\n")
	found := quote.FindAllStringSubmatch(string(guide), -1)
	require.NotEmpty(t, found, "the guide quotes no code")
	for _, m := range found {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(m[1])))
		require.NoError(t, err, "the guide quotes %s", m[1])
		require.True(t, strings.Contains(string(src), m[2]), "docs/guide.md quotes from %s what it no longer holds:\n%s", m[1], m[2])
	}
}
