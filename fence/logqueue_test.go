package fence

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// gatedWriter blocks every write until its gate opens: a journal that does
// not read its pipe.
type gatedWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gatedWriter) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

// A full queue drops instead of blocking, and says how much it dropped
// once the writer moves again.
func TestLogQueueNeverBlocks(t *testing.T) {
	w := &gatedWriter{gate: make(chan struct{})}
	q := NewLogQueue(slog.NewTextHandler(w, nil), 2)
	log := slog.New(q).With("host", "host-a")
	for i := range 10 { // the writer holds one, the queue two: seven dropped
		log.Warn("renewal failed", "n", i)
	}
	close(w.gate)
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := w.String()
	if n := strings.Count(got, "renewal failed"); n < 1 || n > 3 {
		t.Errorf("%d records written, want 1 to 3:\n%s", n, got)
	}
	if !strings.Contains(got, "log lines dropped") || !strings.Contains(got, "host=host-a") {
		t.Errorf("no drop count, or attributes lost:\n%s", got)
	}
}
