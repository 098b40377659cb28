package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

// metrics are the engine's Prometheus collectors. Rule names are bounded
// by the policy, so they are safe as label values.
type metrics struct {
	decisions *prometheus.CounterVec
	errors    *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	rules     prometheus.Gauge
	duration  prometheus.Histogram
}

const subsystem = "policy"

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		decisions: telemetry.NewCounterVec(reg, subsystem, "decisions_total", "Policy decisions, by effect and deciding rule (\"\" when no rule matched).", "effect", "rule"),
		errors:    telemetry.NewCounterVec(reg, subsystem, "evaluation_errors_total", "Decisions denied because a rule could not be evaluated (rule \"\": the input was refused).", "rule"),
		reloads:   telemetry.NewCounterVec(reg, subsystem, "reloads_total", "Policy reloads, by result (ok, error).", "result"),
		rules:     telemetry.NewGauge(reg, subsystem, "rules", "Rules in the policy in force."),
		duration:  telemetry.NewHistogram(reg, subsystem, "decision_duration_seconds", "Time to evaluate the policy for one decision.", []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1}),
	}
}
