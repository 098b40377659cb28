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
		decisions: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem, Name: "decisions_total",
			Help: "Policy decisions, by effect and deciding rule (\"\" when no rule matched).",
		}, []string{"effect", "rule"})),
		errors: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem, Name: "evaluation_errors_total",
			Help: "Decisions denied because a rule could not be evaluated (rule \"\": the input was refused).",
		}, []string{"rule"})),
		reloads: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem, Name: "reloads_total",
			Help: "Policy reloads, by result (ok, error).",
		}, []string{"result"})),
		rules: telemetry.RegisterOrExisting(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem, Name: "rules",
			Help: "Rules in the policy in force.",
		})),
		duration: telemetry.RegisterOrExisting(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem, Name: "decision_duration_seconds",
			Help:    "Time to evaluate the policy for one decision.",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1},
		})),
	}
}
