package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

// metrics are the agent's own; the manager, the sync client and the
// Workload API handler register theirs.
type metrics struct {
	attestations *prometheus.CounterVec
	renewals     *prometheus.CounterVec
	svidExpiry   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "attestations_total",
			Help: "Node attestations by outcome (success, refused, error).",
		}, []string{"outcome"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "svid_renewals_total",
			Help: "Agent SVID renewals by outcome (success, error).",
		}, []string{"outcome"}),
		svidExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "svid_expiry_timestamp_seconds",
			Help: "When the agent's own SVID expires (unix time).",
		}),
	}
	for _, c := range []prometheus.Collector{m.attestations, m.renewals, m.svidExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
