package grants

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

const subsystem = "agent_grant"

// metrics are the handler's Prometheus collectors.
type metrics struct {
	// requests counts finished Grant API calls by method and gRPC code; a
	// Request stream counts when it ends.
	requests *prometheus.CounterVec
	// outcomes counts the final state relayed for each Request stream
	// that got one (granted, denied).
	outcomes *prometheus.CounterVec
	// pending is the number of Request streams waiting for a human.
	pending prometheus.Gauge
	// resumes counts the attempts to resume a wait for approval after
	// the stream to the server broke.
	resumes prometheus.Counter
	// decision is the time from a Request's start to its final state,
	// without the requests that waited for approval.
	decision prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "requests_total",
			Help: "Grant API calls finished, by method and gRPC status code.",
		}, []string{"method", "code"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "outcomes_total",
			Help: "Grant requests decided, by outcome (granted, denied).",
		}, []string{"outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "pending_approval",
			Help: "Grant requests currently waiting for a human approval.",
		}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "wait_resumes_total",
			Help: "Attempts to resume a wait for approval after the stream to nhid-server broke.",
		}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name:    "decision_seconds",
			Help:    "Time from a grant request to its decision, for requests decided by policy alone.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	m.requests = telemetry.RegisterOrExisting(reg, m.requests)
	m.outcomes = telemetry.RegisterOrExisting(reg, m.outcomes)
	m.pending = telemetry.RegisterOrExisting(reg, m.pending)
	m.resumes = telemetry.RegisterOrExisting(reg, m.resumes)
	m.decision = telemetry.RegisterOrExisting(reg, m.decision)
	return m
}
