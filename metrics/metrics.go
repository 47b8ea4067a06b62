// Package metrics defines steward's Prometheus metrics. The daemon records
// into them through the small engine.Metrics interface; GET /metrics
// serves the registry.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is steward's metric set, registered in its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	reconciles     *prometheus.HistogramVec
	actionFailures *prometheus.CounterVec
	exits          prometheus.Counter
	probes         *prometheus.HistogramVec
	unhealthy      prometheus.Counter
	sourceErrors   prometheus.Counter
	sourceRevision *prometheus.GaugeVec
	databaseUp     *prometheus.GaugeVec
	merchantStates *stateCollector
	persistErrors  *prometheus.CounterVec
	eventsPending  prometheus.Gauge
}

// New creates the metric set in a registry of its own.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.reconciles = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "steward_reconcile_duration_seconds", Help: "Time to carry out one action, by action kind and result.",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"action", "result"})
	m.actionFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_apply_failures_total", Help: "Actions that failed, by action kind.",
	}, []string{"action"})
	// Per-merchant counts are in status and history; labels per merchant
	// would make thousands of series.
	m.exits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "steward_merchant_exits_total", Help: "Merchant processes that exited without steward stopping them (each is restarted).",
	})
	m.probes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "steward_probe_duration_seconds", Help: "Health probe latency, by result.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"result"})
	m.unhealthy = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "steward_merchant_unhealthy_total", Help: "Times a merchant failed its health checks past the threshold (each is restarted).",
	})
	m.sourceErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "steward_source_errors_total", Help: "Spec loads that failed (parse or validation errors, fetch errors); the last good state stayed in force.",
	})
	m.sourceRevision = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "steward_source_revision_info", Help: "The spec revision in force (value 1).",
	}, []string{"revision"})
	m.databaseUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "steward_database_up", Help: "Whether a database server is reachable (1) or not (0).",
	}, []string{"database"})
	m.merchantStates = &stateCollector{desc: prometheus.NewDesc("steward_merchants", "Merchants by state.", []string{"state"}, nil)}
	m.persistErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_persist_errors_total", Help: "Record writes that failed (the action that needed them failed too), by kind of record.",
	}, []string{"record"})
	m.eventsPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "steward_events_pending", Help: "History events not written yet; they are kept and retried.",
	})
	m.Registry.MustRegister(m.reconciles, m.actionFailures, m.exits, m.probes, m.unhealthy, m.sourceErrors, m.sourceRevision,
		m.databaseUp, m.merchantStates, m.persistErrors, m.eventsPending, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RouterHealth makes the router's health part of every scrape:
// steward_router_reloads_total, steward_router_failures_total and
// steward_router_failing.
func (m *Metrics) RouterHealth(read func() (reloads, failures int, failing bool)) {
	m.Registry.MustRegister(&routerCollector{read: read,
		reloads:  prometheus.NewDesc("steward_router_reloads_total", "nginx reloads (and starts) through steward.", nil, nil),
		failures: prometheus.NewDesc("steward_router_failures_total", "Routing changes refused (nginx -t) or not applied; the routing before each stayed in force.", nil, nil),
		failing:  prometheus.NewDesc("steward_router_failing", "1 while the latest routing change was refused.", nil, nil)})
}

type routerCollector struct {
	read                       func() (int, int, bool)
	reloads, failures, failing *prometheus.Desc
}

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reloads
	ch <- c.failures
	ch <- c.failing
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	reloads, failures, failing := c.read()
	f := 0.0
	if failing {
		f = 1
	}
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(reloads))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(failures))
	ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, f)
}

// PersistFailed counts a record write that failed.
func (m *Metrics) PersistFailed(record string) { m.persistErrors.WithLabelValues(record).Inc() }

// EventsPending sets the number of history events waiting to be written.
func (m *Metrics) EventsPending(n int) { m.eventsPending.Set(float64(n)) }

// ActionDone records one executed action.
func (m *Metrics) ActionDone(kind string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
		m.actionFailures.WithLabelValues(kind).Inc()
	}
	m.reconciles.WithLabelValues(kind, result).Observe(took.Seconds())
}

// ProcessExited counts an unexpected exit.
func (m *Metrics) ProcessExited(merchant string) { m.exits.Inc() }

// Probed records one health probe.
func (m *Metrics) Probed(took time.Duration, healthy bool) {
	result := "ok"
	if !healthy {
		result = "fail"
	}
	m.probes.WithLabelValues(result).Observe(took.Seconds())
}

// Unhealthy counts a merchant killed for failing its health checks.
func (m *Metrics) Unhealthy(merchant string) { m.unhealthy.Inc() }

// SourceLoaded records a spec load: the revision in force, or an error.
func (m *Metrics) SourceLoaded(revision string, err error) {
	if err != nil {
		m.sourceErrors.Inc()
		return
	}
	m.sourceRevision.Reset()
	m.sourceRevision.WithLabelValues(revision).Set(1)
}

// DatabaseUp records a database's reachability.
func (m *Metrics) DatabaseUp(name string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.databaseUp.WithLabelValues(name).Set(v)
}

// MerchantStates has the merchants-by-state gauge computed by counts,
// called at each scrape of the registry (and only then: counting states
// means checking every merchant's process, which an idle daemon need not do
// for nobody).
func (m *Metrics) MerchantStates(counts func() map[string]int) {
	m.merchantStates.mu.Lock()
	defer m.merchantStates.mu.Unlock()
	m.merchantStates.counts = counts
}

// stateCollector collects steward_merchants{state} at scrape time.
type stateCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	counts func() map[string]int
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	counts := c.counts
	c.mu.Unlock()
	if counts == nil {
		return
	}
	for s, n := range counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), s)
	}
}
