package agent_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/nodetest"
)

// http2Preface is what a client sends first on an HTTP/2 connection: the
// preface and an empty SETTINGS frame.
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

func TestIdleConnectionsAreCountedAndClosed(t *testing.T) {
	h := nodetest.StartOne(t, nodetest.Options{Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Limits.MaxConnectionIdle = 300 * time.Millisecond
	}})
	conns := h.Agent(0).Connections
	before := conns()
	// Connections that only say the HTTP/2 preface and then nothing, as
	// in the finding that held thousands of them for minutes.
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", h.Addr())
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write(http2Preface)
		require.NoError(t, err)
		idle = append(idle, c)
	}
	h.WaitFor("the connections counted", func() bool { return conns() >= before+3 })
	for _, c := range idle {
		// The server closes each after MaxConnectionIdle (a GOAWAY, then
		// EOF); the deadline only bounds a failing test.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		_, err := io.Copy(io.Discard, c)
		require.NoError(t, err, "the server closed the idle connection")
	}
	h.WaitFor("the connections no longer counted", func() bool { return conns() <= before })
}
