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
		decisions:          telemetry.NewCounterVec(reg, sub, "decisions_total", "Grant decisions by effect (allow, deny, require_approval).", "effect"),
		latency:            telemetry.NewHistogram(reg, sub, "decision_seconds", "Time to decide and store a grant, signing included.", prometheus.ExponentialBuckets(0.0005, 2, 14)),
		approvals:          telemetry.NewCounterVec(reg, sub, "approvals_total", "People's decisions on pending grants by outcome (approved, denied, refused).", "outcome"),
		reputationFailures: telemetry.NewCounterVec(reg, sub, "reputation_failures_total", "Reputation tracker failures during grant handling, by operation (standing, observe).", "op"),
	}
}

func (m *metrics) observe(st typesv1.GrantStatus, d time.Duration) {
	m.decisions.WithLabelValues(effectOf(st)).Inc()
	m.latency.Observe(d.Seconds())
}
