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
		events:    telemetry.NewCounterVec(reg, sub, "events_total", "Reputation events applied, by kind (reset included).", "kind"),
		crossings: telemetry.NewCounterVec(reg, sub, "threshold_crossings_total", "Scores that fell below a threshold (alert, restrict).", "threshold"),
		revoked:   telemetry.NewCounter(reg, sub, "revoked_grants_total", "Grants revoked because their subject became restricted."),
		failures:  telemetry.NewCounter(reg, sub, "failures_total", "Events that could not be stored and revocations that failed."),
	}
}
