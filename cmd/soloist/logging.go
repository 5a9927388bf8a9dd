package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lmittmann/tint"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the process logger. format is auto (tint with colours when
// w is a terminal, else JSON), text (logfmt) or json; level is debug, info,
// warn or error.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "auto":
		if isTerminal(w) {
			h = tint.NewHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: os.Getenv("NO_COLOR") != ""})
		} else {
			h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})
		}
	case "json":
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})
	case "text":
		h = slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})
	default:
		return nil, fmt.Errorf("invalid --log-format %q: use auto, text or json", format)
	}
	return slog.New(&uniqueKeys{inner: h}), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if strings.EqualFold(s, "warning") {
		s = "warn"
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// zapLogger returns a zap logger that writes to log at minLevel and above, so
// that etcd's client and embedded server log like the rest of the process.
// Calling the returned silence function drops everything below Fatal (etcd
// logs errors of its own listeners while it closes).
func zapLogger(log *slog.Logger, minLevel zapcore.Level) (*zap.Logger, func()) {
	c := &slogCore{log: log, min: minLevel, quiet: new(atomic.Bool)}
	return zap.New(c), func() { c.quiet.Store(true) }
}

type slogCore struct {
	log    *slog.Logger
	min    zapcore.Level
	fields []zapcore.Field
	quiet  *atomic.Bool
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	if c.quiet.Load() {
		return l >= zapcore.FatalLevel
	}
	return l >= c.min && c.log.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(append([]zapcore.Field(nil), c.fields...), fs...)
	return &cp
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// routine are etcd warnings that are expected of an embedded single node;
// they are logged at debug level.
var routine = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

// retryFailed is the etcd client's line for every failed attempt of a
// call, cancelled calls included; the caller reports what matters.
const retryFailed = "retrying of unary invoker failed"

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	lvl := slogLevel(e.Level)
	if routine[e.Message] {
		lvl = slog.LevelDebug
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	if e.Message == retryFailed && lvl > slog.LevelDebug && ended(enc.Fields["error"]) {
		// A call whose context was cancelled or ran out: its caller sees
		// the error and decides what to say.
		lvl = slog.LevelDebug
	}
	if !c.log.Enabled(context.Background(), lvl) {
		return nil
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for _, k := range keys {
		attrs = append(attrs, slog.Any(strings.ReplaceAll(k, "-", "_"), enc.Fields[k]))
	}
	c.log.LogAttrs(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// ended reports whether a logged error is a cancelled or timed-out call.
func ended(v any) bool {
	s := fmt.Sprint(v)
	return strings.Contains(s, "context canceled") || strings.Contains(s, "code = Canceled") ||
		strings.Contains(s, "context deadline exceeded") || strings.Contains(s, "code = DeadlineExceeded")
}

// uniqueKeys is a slog.Handler that writes each key once per line: when
// a logger's With and a call (or two With calls) give the same key, the
// last value wins, where encoding/json readers would silently keep one of
// two keys. Keys that slog writes itself (time, level, msg) get an "attr_"
// prefix.
type uniqueKeys struct {
	inner slog.Handler
	attrs []slog.Attr // from WithAttrs, in order
}

func (h *uniqueKeys) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *uniqueKeys) WithAttrs(as []slog.Attr) slog.Handler {
	return &uniqueKeys{inner: h.inner, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup hands the attributes so far to the inner handler: keys are
// unique within each group from then on.
func (h *uniqueKeys) WithGroup(name string) slog.Handler {
	return &uniqueKeys{inner: h.inner.WithAttrs(unique(h.attrs)).WithGroup(name)}
}

func (h *uniqueKeys) Handle(ctx context.Context, r slog.Record) error {
	all := make([]slog.Attr, 0, len(h.attrs)+r.NumAttrs())
	all = append(all, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		all = append(all, a)
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(unique(all)...)
	return h.inner.Handle(ctx, out)
}

// unique keeps the last attribute of each key, where the key was first
// used.
func unique(as []slog.Attr) []slog.Attr {
	idx := make(map[string]int, len(as))
	out := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		switch a.Key {
		case "":
			if a.Value.Kind() == slog.KindGroup {
				out = append(out, a) // inlined into the line
			}
			continue
		case slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey:
			a.Key = "attr_" + a.Key
		}
		if i, ok := idx[a.Key]; ok {
			out[i] = a
			continue
		}
		idx[a.Key] = len(out)
		out = append(out, a)
	}
	return out
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}
