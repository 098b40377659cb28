package reputation

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

type metrics struct {
	events    *prometheus.CounterVec
	crossings *prometheus.CounterVec
	revoked   prometheus.Counter
	failures  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const sub = "reputation"
	return &metrics{
		events: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "events_total",
			Help: "Reputation events applied, by kind (reset included).",
		}, []string{"kind"})),
		crossings: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "threshold_crossings_total",
			Help: "Scores that fell below a threshold (alert, restrict).",
		}, []string{"threshold"})),
		revoked: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "revoked_grants_total",
			Help: "Grants revoked because their subject became restricted.",
		})),
		failures: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "failures_total",
			Help: "Events that could not be stored and revocations that failed.",
		})),
	}
}
