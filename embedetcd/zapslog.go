package embedetcd

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that passes etcd's zap entries to a
// slog.Handler, so etcd logs where the rest of the process logs. Entries
// below level are dropped before any field is encoded.
//
// Some etcd errors are expected and harmless; they are passed on as
// warnings so that they do not alarm at the default level:
//   - every error while stopping is set: a closing etcd reports its own
//     listeners' closing as errors ("http: Server closed");
//   - the messages in benignErrors, at any time.
type slogCore struct {
	h        slog.Handler
	level    slog.Leveler
	stopping *atomic.Bool
	// fields were added by zap's With; they precede each entry's own.
	fields []zapcore.Field
}

// benignErrors are messages etcd logs at error level that need no action.
var benignErrors = map[string]bool{
	// A fresh member's storage-version monitor may run before the first
	// raft term is stored; it succeeds on its next round. etcd's
	// maintainers call it harmless (etcd-io/etcd issue 18978).
	"failed to update storage version": true,
}

// newSlogCore returns a core writing entries at level or above to h,
// demoting errors while stopping is set.
func newSlogCore(h slog.Handler, level slog.Leveler, stopping *atomic.Bool) zapcore.Core {
	return &slogCore{h: h, level: level, stopping: stopping}
}

// entryLevel returns the slog level an entry of zap level l with message
// msg is written at. With msg "" it is the highest level such an entry
// can have.
func (c *slogCore) entryLevel(l zapcore.Level, msg string) slog.Level {
	sl := slogLevel(l)
	if sl >= slog.LevelError && (c.stopping.Load() || benignErrors[msg]) {
		return slog.LevelWarn
	}
	return sl
}

// enabledAt reports whether entries at slog level sl are written.
func (c *slogCore) enabledAt(sl slog.Level) bool {
	return sl >= c.level.Level() && c.h.Enabled(context.Background(), sl)
}

// Enabled implements zapcore.LevelEnabler.
func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.enabledAt(c.entryLevel(l, ""))
}

// With implements zapcore.Core.
func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{
		h:        c.h,
		level:    c.level,
		stopping: c.stopping,
		fields:   append(slices.Clip(c.fields), fields...),
	}
}

// Check implements zapcore.Core.
func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.enabledAt(c.entryLevel(e.Level, e.Message)) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write implements zapcore.Core. Fields become attributes in key order;
// the zap logger name, if any, becomes the "logger" attribute.
func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	r := slog.NewRecord(e.Time, c.entryLevel(e.Level, e.Message), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		r.AddAttrs(slog.Any(k, enc.Fields[k]))
	}
	return c.h.Handle(context.Background(), r)
}

// Sync implements zapcore.Core; slog handlers have nothing to flush.
func (c *slogCore) Sync() error { return nil }

// slogLevel maps a zap level to the nearest slog level.
func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// zapLevelName maps a slog level to the name of the etcd log level that
// passes it, for embed.Config.LogLevel.
func zapLevelName(l slog.Level) string {
	switch {
	case l <= slog.LevelDebug:
		return "debug"
	case l <= slog.LevelInfo:
		return "info"
	case l <= slog.LevelWarn:
		return "warn"
	default:
		return "error"
	}
}
