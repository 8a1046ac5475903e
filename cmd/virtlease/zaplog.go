package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcdLogger passes the etcd client's warnings and errors (TLS failures,
// endpoints it gives up on, balancer trouble) to the watchdog's log; the
// client otherwise says nothing about why it cannot connect. The same
// message is logged at most once per repeat: the client repeats itself on
// every retry while etcd is away, and the journal must not fill with it.
func etcdLogger(log *slog.Logger, repeat time.Duration) *zap.Logger {
	return zap.New(&slogCore{log: log, limit: &repeatLimit{every: repeat, last: map[string]time.Time{}, now: time.Now}})
}

// slogCore is a zapcore.Core writing Warn and above to slog.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
	limit  *repeatLimit
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(slices.Clip(c.fields), fs...), limit: c.limit}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	suppressed, ok := c.limit.allow(e.Message)
	if !ok {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	args := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		args = append(args, k, fmt.Sprint(enc.Fields[k]))
	}
	if suppressed > 0 {
		args = append(args, "repeated", suppressed)
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, "etcd client: "+e.Message, args...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// repeatLimit lets a message through at most once per every.
type repeatLimit struct {
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	last   map[string]time.Time
	counts map[string]int
}

// allow reports whether msg may be logged now, and how many times it was
// held back since it last was.
func (r *repeatLimit) allow(msg string) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	now := r.now()
	if t, seen := r.last[msg]; seen && now.Sub(t) < r.every {
		r.counts[msg]++
		return 0, false
	}
	r.last[msg] = now
	suppressed = r.counts[msg]
	delete(r.counts, msg)
	return suppressed, true
}
