package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/virtlease/virtlease/fence"
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
	sessionState  *prometheus.GaugeVec
	deviceArmed   prometheus.Gauge
	haFailed      prometheus.Gauge
	timings       *prometheus.GaugeVec
}

// newPromMetrics registers the watchdog's metrics on reg; stateDir is where
// the hooks count refused starts (hook.Hook.refuse).
func newPromMetrics(reg prometheus.Registerer, stateDir string) *promMetrics {
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
	m.sessionState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "virtlease_session_state",
		Help: "1 for this host's session state: held (renewed by etcd), resumed (from the session file, not yet renewed), fencing, none; 0 for the others."}, []string{"state"})
	m.deviceArmed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "virtlease_hardware_watchdog_armed",
		Help: "1 while the hardware watchdog device (fence.hardware_watchdog) is open and counting, else 0."})
	m.haFailed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "virtlease_ha_intents_failed",
		Help: "HA intents in the cluster that gave up restarting (want failed), as this host last read them: an operator must look (virtlease status, virtlease ha reset)."})
	m.timings = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "virtlease_config_seconds",
		Help: "The configured timings, for alert thresholds: session_ttl, renew_interval, fence_margin."}, []string{"setting"})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "virtlease_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: buildLabels()})
	buildInfo.Set(1)
	for _, s := range fence.SessionStates() {
		m.sessionState.WithLabelValues(s).Set(0)
	}
	reg.MustRegister(m.sessionLeft, m.renewLatency, m.renewFailures, m.fences, m.kills, m.survivors, m.reconcile, m.guests, m.haRestarts,
		m.sessionState, m.deviceArmed, m.haFailed, m.timings, buildInfo, newRefusalCollector(filepath.Join(stateDir, "refusals")))
	return m
}

// buildLabels are virtlease_build_info's labels: version, the commit and
// the Go release.
func buildLabels() prometheus.Labels {
	l := prometheus.Labels{"version": version, "revision": "unknown", "goversion": runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				l["revision"] = s.Value
			}
		}
	}
	return l
}

// refusalCollector exports the refused-start counts the hooks keep in dir
// (one file per reason, a byte per refusal) as a counter.
type refusalCollector struct {
	dir  string
	desc *prometheus.Desc
}

func newRefusalCollector(dir string) refusalCollector {
	return refusalCollector{dir: dir, desc: prometheus.NewDesc("virtlease_start_refusals_total",
		"Guest starts the hook refused on this host since boot, by reason: held (by another host or domain), draining, unfenced, no_session, fence_point, etcd_unavailable, shutting_down, saved_state, incoming, other.",
		[]string{"reason"}, nil)}
}

func (c refusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c refusalCollector) Collect(ch chan<- prometheus.Metric) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return // none yet (or unreadable: nothing to claim)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(fi.Size()), e.Name())
	}
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
func (m *promMetrics) SessionState(state string) {
	for _, s := range fence.SessionStates() {
		v := 0.0
		if s == state {
			v = 1
		}
		m.sessionState.WithLabelValues(s).Set(v)
	}
}
func (m *promMetrics) DeviceArmed(armed bool) {
	v := 0.0
	if armed {
		v = 1
	}
	m.deviceArmed.Set(v)
}
func (m *promMetrics) HAIntentsFailed(n int) { m.haFailed.Set(float64(n)) }

// setTimings exports the configured timings (virtlease_config_seconds), so
// that alert rules derive their thresholds from them (docs/alerts.yaml).
func (m *promMetrics) setTimings(c fence.Config) {
	m.timings.WithLabelValues("session_ttl").Set(c.TTL.Seconds())
	m.timings.WithLabelValues("renew_interval").Set(c.RenewInterval.Seconds())
	m.timings.WithLabelValues("fence_margin").Set(c.Margin.Seconds())
}
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
