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
	// approvals counts people's decisions on pending grants by outcome:
	// approved, denied, refused (the approver may not decide it).
	approvals *prometheus.CounterVec
	// reputationFailures counts tracker failures by operation (standing,
	// observe); a failed standing decides as if restricted.
	reputationFailures *prometheus.CounterVec
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
		approvals: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "approvals_total",
			Help: "People's decisions on pending grants by outcome (approved, denied, refused).",
		}, []string{"outcome"})),
		reputationFailures: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "reputation_failures_total",
			Help: "Reputation tracker failures during grant handling, by operation (standing, observe).",
		}, []string{"op"})),
	}
}

func (m *metrics) observe(st typesv1.GrantStatus, d time.Duration) {
	m.decisions.WithLabelValues(effectOf(st)).Inc()
	m.latency.Observe(d.Seconds())
}
