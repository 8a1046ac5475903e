package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// The etcd client's warnings reach the watchdog's log (its info does not),
// and a message it repeats on every retry is logged once per interval.
func TestEtcdLogger(t *testing.T) {
	var out strings.Builder
	now := time.Unix(0, 0)
	lim := &repeatLimit{every: time.Minute, last: map[string]time.Time{}, now: func() time.Time { return now }}
	z := zap.New(&slogCore{log: slog.New(slog.NewTextHandler(&out, nil)), limit: lim}).With(zap.String("endpoint", "https://etcd-1:2379"))
	z.Info("balancer picked a subconn")
	z.Warn("retrying of unary invoker failed", zap.Error(errString("x509: certificate signed by unknown authority")))
	z.Warn("retrying of unary invoker failed")
	z.Warn("retrying of unary invoker failed")
	z.Error("lost leader")
	now = now.Add(2 * time.Minute)
	z.Warn("retrying of unary invoker failed")
	got := out.String()
	if strings.Contains(got, "balancer") {
		t.Errorf("info logged:\n%s", got)
	}
	if n := strings.Count(got, "retrying of unary invoker failed"); n != 2 {
		t.Errorf("repeated warning logged %d times, want 2:\n%s", n, got)
	}
	for _, want := range []string{`level=WARN msg="etcd client: retrying of unary invoker failed" endpoint=https://etcd-1:2379 error="x509: certificate signed by unknown authority"`,
		`level=ERROR msg="etcd client: lost leader"`, "repeated=2"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
