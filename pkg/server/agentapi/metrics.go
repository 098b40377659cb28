package agentapi

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

// Attestation outcomes, the values of the outcome label.
const (
	outcomeSuccess = "success"
	outcomeRefused = "refused"
	outcomeBanned  = "banned"
	outcomeInvalid = "invalid"
	outcomeError   = "error"
)

type metrics struct {
	attestations  *prometheus.CounterVec
	issued        *prometheus.CounterVec
	syncSnapshots *prometheus.CounterVec
	syncStreams   prometheus.Gauge
	// reattestations and reattestStreams are continuous attestation's.
	reattestations  *prometheus.CounterVec
	reattestStreams prometheus.Gauge
	// attestRecordsDropped and workloadEvents are the audit records'.
	attestRecordsDropped prometheus.Counter
	workloadEvents       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const sub = "agentapi"
	return &metrics{
		attestations: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "attestations_total",
			Help: "Node attestations by attestor and outcome (success, refused, banned, invalid, error).",
		}, []string{"attestor", "outcome"})),
		issued: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "svids_issued_total",
			Help: "SVIDs issued through the agent API, by kind (agent_x509, x509, jwt).",
		}, []string{"kind"})),
		syncSnapshots: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "sync_snapshots_total",
			Help: "Full entry snapshots sent to agents, by reason (initial, compacted, alias, node, lag, unknown_revision) and resumes (resume).",
		}, []string{"reason"})),
		syncStreams: telemetry.RegisterOrExisting(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "sync_streams",
			Help: "Open Sync streams.",
		})),
		reattestations: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "reattestations_total",
			Help: "Continuous attestation rounds by attestor and outcome (success, refused, error: no verdict).",
		}, []string{"attestor", "outcome"})),
		reattestStreams: telemetry.RegisterOrExisting(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "reattest_streams",
			Help: "Open Reattest streams: nodes reachable for continuous attestation.",
		})),
		attestRecordsDropped: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "attest_records_dropped_total",
			Help: "Audit records of failed node attestations left out because failures came faster than the record rate limit.",
		})),
		workloadEvents: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub,
			Name: "workload_events_total",
			Help: "Workload events reported by agents, by kind (attestation_failed, not_entitled) and outcome (recorded; rate_limited: dropped by the per-node limit).",
		}, []string{"kind", "outcome"})),
	}
}

// serialHex is how nhid spells a certificate serial in node records and
// the ledger: lowercase hex without leading zeros.
func serialHex(cert *x509.Certificate) string {
	return cert.SerialNumber.Text(16)
}
