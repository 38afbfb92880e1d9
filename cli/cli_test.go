package cli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDevAddrs(t *testing.T) {
	got, err := devAddrs("127.0.0.1:4600", 3)
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:4600", "127.0.0.1:4601", "127.0.0.1:4602"}, got)
	got, err = devAddrs("127.0.0.1:0", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:0", "127.0.0.1:0"}, got, "port 0: every node picks a free port")
	for _, bad := range []struct {
		listen string
		n      int
	}{{"127.0.0.1:4600", -1}, {"127.0.0.1:4600", 17}, {"nohost", 1}, {"127.0.0.1:x", 1}} {
		_, err := devAddrs(bad.listen, bad.n)
		require.Error(t, err, "%q × %d", bad.listen, bad.n)
	}
}
