package fence

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// LogQueue is a slog.Handler that never blocks its caller: records go
// into a bounded queue that one goroutine writes to the next handler. Under
// systemd, stderr is a pipe to journald; when journald does not read it (a
// slow or hung disk) and the pipe is full, a plain handler blocks the fence
// loop before its kills. When the queue is full, records are dropped and
// counted, and the count is logged once the queue moves again.
type LogQueue struct {
	next slog.Handler
	q    *logQueue // shared by the handlers WithAttrs and WithGroup derive
}

type logQueue struct {
	records chan queued
	dropped atomic.Int64
}

type queued struct {
	h       slog.Handler
	r       slog.Record
	flushed chan struct{} // a Flush marker, not a record
}

// NewLogQueue starts the goroutine that writes up to size queued records
// to next; it runs for the life of the process.
func NewLogQueue(next slog.Handler, size int) *LogQueue {
	q := &logQueue{records: make(chan queued, size)}
	go q.drain(next)
	return &LogQueue{next: next, q: q}
}

// Enabled asks the next handler.
func (h *LogQueue) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle queues r and returns at once. Outcomes: nil, always; a record
// that finds the queue full is dropped and counted.
func (h *LogQueue) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.q.records <- queued{h: h.next, r: r.Clone()}:
	default:
		h.q.dropped.Add(1)
	}
	return nil
}

// WithAttrs returns a handler with as added, on the same queue.
func (h *LogQueue) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogQueue{next: h.next.WithAttrs(as), q: h.q}
}

// WithGroup returns a handler in group name, on the same queue.
func (h *LogQueue) WithGroup(name string) slog.Handler {
	return &LogQueue{next: h.next.WithGroup(name), q: h.q}
}

// Flush waits until every record queued before it has been written.
// Outcomes: nil; ctx's error when ctx ended first (the writer is stuck).
func (h *LogQueue) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case h.q.records <- queued{flushed: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *logQueue) drain(next slog.Handler) {
	ctx := context.Background()
	for e := range q.records {
		if n := q.dropped.Swap(0); n > 0 {
			r := slog.NewRecord(time.Now(), slog.LevelWarn, "log lines dropped: the log's reader did not keep up", 0)
			r.AddAttrs(slog.Int64("dropped", n))
			next.Handle(ctx, r)
		}
		if e.flushed != nil {
			close(e.flushed)
			continue
		}
		e.h.Handle(ctx, e.r)
	}
}
