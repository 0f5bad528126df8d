package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"halb/internal/admin"
)

// Metrics owns a private registry: halb's own metrics, derived from an
// admin.Source on every scrape, plus health-check durations and the Go
// runtime and process collectors.
type Metrics struct {
	reg    *prometheus.Registry
	checks *prometheus.HistogramVec
	// err is a registration failure. It can only come from a programming
	// mistake (two metrics with one name), so it is reported on scrape
	// rather than making New fallible.
	err error
}

// New returns metrics that read src on every scrape. It does no I/O.
func New(src admin.Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		checks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "halb_health_check_duration_seconds",
			Help: "Duration of health-check probes by outcome (result: ok or fail).",
			// Checks on a LAN take about a millisecond; timeouts are seconds.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"backend", "server", "result"}),
	}
	m.err = errors.Join(
		m.reg.Register(m.checks),
		m.reg.Register(newSnapshotCollector(src)),
		m.reg.Register(collectors.NewGoCollector()),
		m.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	)
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m.err != nil {
		err := fmt.Errorf("register metrics: %w", m.err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		})
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failing collector should not hide the others.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Gatherer gives the registry, for tests and for serving it elsewhere.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// ObserveCheck records one health-check probe of server in backend that
// took d. It is safe for concurrent use and does not block.
func (m *Metrics) ObserveCheck(backend, server string, d time.Duration, ok bool) {
	result := "fail"
	if ok {
		result = "ok"
	}
	m.checks.WithLabelValues(backend, server, result).Observe(d.Seconds())
}
