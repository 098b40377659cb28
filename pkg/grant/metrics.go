package grant

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

type metrics struct {
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const sub = "grant"
	return &metrics{
		decisions: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "decisions_total",
			Help: "Grant decisions by effect (allow, deny, require_approval).",
		}, []string{"effect"})),
		latency: telemetry.RegisterOrExisting(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name:    "decision_seconds",
			Help:    "Time to decide and store a grant, signing included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		})),
	}
}

func (m *metrics) observe(st typesv1.GrantStatus, d time.Duration) {
	m.decisions.WithLabelValues(effectOf(st)).Inc()
	m.latency.Observe(d.Seconds())
}
