package agent_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// lockedBuffer collects the log lines of every node.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestJSONLogLinesParseWithoutDuplicateKeys runs a cluster through a node's
// loss with JSON logs at debug level: every line is one JSON object with
// no key twice (slog repeats a key given both by With and by the call),
// and the loss is one line at the leader saying where the partitions went.
func TestJSONLogLinesParseWithoutDuplicateKeys(t *testing.T) {
	var logs lockedBuffer
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3,
		Register: func(reg *node.Registry) error {
			return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
		},
		Config: func(cfg *node.Config) {
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		},
	})
	c.WaitSettled()
	victim := -1
	for i := range 3 {
		if c.Agent(i).Leader.Term() == 0 {
			victim = i
		}
	}
	victimID := c.Nodes[victim].Config.ID
	c.Kill(victim)
	c.WaitSettled()
	c.WaitFor("the leader logged the loss", func() bool { return strings.Contains(logs.String(), `"lost":"`+victimID+`"`) })

	lines := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines++
		require.NoError(t, checkJSONObject(sc.Bytes()), "log line %d: %s", lines, sc.Text())
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec))
		if rec["msg"] == "node lost: partitions reassigned" {
			require.Equal(t, victimID, rec["lost"])
			require.NotEmpty(t, rec["to"])
		}
	}
	require.Greater(t, lines, 10)
}

// checkJSONObject reports an error unless b is one JSON object in which no
// object has a key twice.
func checkJSONObject(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := checkValue(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one value on the line")
	}
	return nil
}

func checkValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key := k.(string)
			if seen[key] {
				return fmt.Errorf("key %q twice", key)
			}
			seen[key] = true
			if err := checkValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	}
	return nil
}
