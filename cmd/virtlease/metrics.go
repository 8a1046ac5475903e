package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promMetrics is fence.Metrics on a Prometheus registry of its own (no
// global registry: cmd wires it).
type promMetrics struct {
	sessionLeft   prometheus.Gauge
	renewLatency  prometheus.Histogram
	renewFailures prometheus.Counter
	fences        prometheus.Counter
	kills         *prometheus.CounterVec
	survivors     prometheus.Counter
	reconcile     *prometheus.CounterVec
	guests        prometheus.Gauge
	haRestarts    *prometheus.CounterVec
}

func newPromMetrics(reg prometheus.Registerer) *promMetrics {
	m := &promMetrics{
		sessionLeft: prometheus.NewGauge(prometheus.GaugeOpts{Name: "virtlease_session_ttl_left_seconds",
			Help: "Time until etcd may expire this host's session, dated from the last acknowledged renewal's send time; 0 while fencing or without a session."}),
		renewLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "virtlease_renew_latency_seconds",
			Help: "Round trip of acknowledged session renewals.", Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2}}),
		renewFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "virtlease_renew_failures_total",
			Help: "Session renewals that failed or timed out."}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{Name: "virtlease_fences_total",
			Help: "Times this host fenced (killed its guests because its session could expire)."}),
		kills: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "virtlease_kill_rounds_total",
			Help: "Rounds of guest kills, by reason."}, []string{"reason"}),
		survivors: prometheus.NewCounter(prometheus.CounterOpts{Name: "virtlease_kill_survivors_total",
			Help: "Guests still alive after a kill round (the hardware watchdog must cover these)."}),
		reconcile: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "virtlease_reconcile_actions_total",
			Help: "Reconcile actions: adopt, kill, release."}, []string{"action"}),
		guests: prometheus.NewGauge(prometheus.GaugeOpts{Name: "virtlease_guests_managed",
			Help: "Running guests libvirt reported at the last reconcile."}),
		haRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "virtlease_ha_restarts_total",
			Help: "HA restart attempts on this host, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.sessionLeft, m.renewLatency, m.renewFailures, m.fences, m.kills, m.survivors, m.reconcile, m.guests, m.haRestarts)
	return m
}

func (m *promMetrics) SessionLeft(d time.Duration) { m.sessionLeft.Set(max(d, 0).Seconds()) }
func (m *promMetrics) Renewed(d time.Duration)     { m.renewLatency.Observe(d.Seconds()) }
func (m *promMetrics) RenewFailed()                { m.renewFailures.Inc() }
func (m *promMetrics) Fenced()                     { m.fences.Inc() }
func (m *promMetrics) Killed(why string, survivors int) {
	reason := "fence"
	switch {
	case len(why) >= 9 && why[:9] == "reconcile":
		reason = "reconcile"
	case why == "not kept safe while the watchdog was away" || why == "recover":
		reason = "recover"
	}
	m.kills.WithLabelValues(reason).Inc()
	m.survivors.Add(float64(survivors))
}
func (m *promMetrics) Reconciled(action string) { m.reconcile.WithLabelValues(action).Inc() }
func (m *promMetrics) GuestsManaged(n int)      { m.guests.Set(float64(n)) }
func (m *promMetrics) HARestarted(ok bool) {
	if ok {
		m.haRestarts.WithLabelValues("ok").Inc()
	} else {
		m.haRestarts.WithLabelValues("failed").Inc()
	}
}

// serveMetrics serves /metrics on listen until ctx ends.
func serveMetrics(ctx context.Context, listen string, reg *prometheus.Registry, log *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("metrics.listen %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err.Error())
		}
	}()
	log.Info("serving metrics", "listen", ln.Addr().String())
	return nil
}
