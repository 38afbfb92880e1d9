package embedetcd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// recordHandler keeps the records it handles.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// attrs returns r's attributes as strings by key.
func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

func TestSlogCore(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	lg := zap.New(newSlogCore(h, slog.LevelWarn, new(atomic.Bool))).Named("raft").With(zap.String("member", "m1"))

	lg.Info("dropped below level")
	lg.Debug("dropped below level")
	lg.Warn("slow apply", zap.Int("ms", 120), zap.Error(errors.New("boom")))
	lg.Error("apply failed", zap.Strings("peers", []string{"a", "b"}))

	require.Len(t, h.records, 2)
	warn, errRec := h.records[0], h.records[1]
	assert.Equal(t, "slow apply", warn.Message)
	assert.Equal(t, slog.LevelWarn, warn.Level)
	assert.False(t, warn.Time.IsZero())
	assert.Equal(t, map[string]string{"logger": "raft", "member": "m1", "ms": "120", "error": "boom"}, attrs(warn))

	assert.Equal(t, "apply failed", errRec.Message)
	assert.Equal(t, slog.LevelError, errRec.Level)
	assert.Equal(t, "m1", attrs(errRec)["member"])
	assert.Equal(t, "[a b]", attrs(errRec)["peers"])

	// Attribute keys come in sorted order after "logger".
	var keys []string
	warn.Attrs(func(a slog.Attr) bool {
		keys = append(keys, a.Key)
		return true
	})
	assert.Equal(t, []string{"logger", "error", "member", "ms"}, keys)
}

func TestSlogCoreDemotesErrorsWhileStopping(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	stopping := new(atomic.Bool)
	lg := zap.New(newSlogCore(h, slog.LevelWarn, stopping))
	lg.Error("before stop")
	stopping.Store(true)
	lg.Error("while stopping")
	lg.Info("still below level")
	require.Len(t, h.records, 2)
	assert.Equal(t, slog.LevelError, h.records[0].Level)
	assert.Equal(t, slog.LevelWarn, h.records[1].Level)

	quiet := zap.New(newSlogCore(h, slog.LevelError, stopping))
	quiet.Error("dropped while stopping")
	assert.Len(t, h.records, 2)
}

func TestSlogCoreDemotesBenignErrors(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	lg := zap.New(newSlogCore(h, slog.LevelWarn, new(atomic.Bool)))
	lg.Error("failed to update storage version", zap.Error(errors.New("cannot detect storage schema version: missing term information")))
	lg.Error("some other failure")
	require.Len(t, h.records, 2)
	assert.Equal(t, slog.LevelWarn, h.records[0].Level)
	assert.Equal(t, slog.LevelError, h.records[1].Level)

	quiet := zap.New(newSlogCore(h, slog.LevelError, new(atomic.Bool)))
	quiet.Error("failed to update storage version")
	assert.Len(t, h.records, 2)
}

func TestSlogCoreHonoursHandlerLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})
	core := newSlogCore(h, slog.LevelDebug, new(atomic.Bool))
	assert.False(t, core.Enabled(zapcore.WarnLevel))
	assert.True(t, core.Enabled(zapcore.ErrorLevel))
	lg := zap.New(core)
	lg.Warn("not written")
	lg.Error("written")
	assert.NotContains(t, buf.String(), "not written")
	assert.Contains(t, buf.String(), "msg=written")
	assert.NoError(t, core.Sync())
}

func TestLevelMapping(t *testing.T) {
	t.Parallel()
	zapToSlog := map[zapcore.Level]slog.Level{
		zapcore.DebugLevel:  slog.LevelDebug,
		zapcore.InfoLevel:   slog.LevelInfo,
		zapcore.WarnLevel:   slog.LevelWarn,
		zapcore.ErrorLevel:  slog.LevelError,
		zapcore.DPanicLevel: slog.LevelError,
		zapcore.PanicLevel:  slog.LevelError,
		zapcore.FatalLevel:  slog.LevelError,
	}
	for z, want := range zapToSlog {
		assert.Equal(t, want, slogLevel(z), "slogLevel(%v)", z)
	}
	slogToName := map[slog.Level]string{
		slog.LevelDebug - 4: "debug",
		slog.LevelDebug:     "debug",
		slog.LevelInfo:      "info",
		slog.LevelWarn:      "warn",
		slog.LevelError:     "error",
		slog.LevelError + 4: "error",
	}
	for l, want := range slogToName {
		assert.Equal(t, want, zapLevelName(l), "zapLevelName(%v)", l)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of etcd's
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestEtcdLogsReachLogger(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.EtcdLogLevel = slog.LevelInfo
	s, err := Start(context.Background(), cfg)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	out := buf.String()
	assert.NotContains(t, out, "level=ERROR", "a clean start and stop logged an error")
	assert.Contains(t, out, `msg="embedded etcd started"`)
	assert.Contains(t, out, `msg="embedded etcd stopped"`)
	var etcdLines int
	for line := range strings.Lines(out) {
		if strings.Contains(line, "origin=etcd") {
			etcdLines++
			assert.NotContains(t, line, "level=DEBUG", "etcd line below EtcdLogLevel: %s", line)
		}
	}
	assert.Positive(t, etcdLines, "no etcd log line reached the logger")
}

// Slow-request warnings are built (etcd formats the whole request first)
// only when they can reach the logger.
func TestSlowRequestWarningsOnlyWhenPassedOn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level slog.Level
		apply time.Duration
		unary time.Duration
	}{
		{slog.LevelError, neverWarn, neverWarn},
		{slog.LevelWarn, embed.DefaultWarningApplyDuration, embed.DefaultWarningUnaryRequestDuration},
	} {
		cfg := testConfig()
		cfg.EtcdLogLevel = tc.level
		s := start(t, cfg)
		got := s.etcd.Server.Cfg
		assert.Equal(t, tc.apply, got.WarningApplyDuration, "level %v", tc.level)
		assert.Equal(t, tc.unary, got.WarningUnaryRequestDuration, "level %v", tc.level)
	}
}
