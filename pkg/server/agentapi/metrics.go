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
		attestations:         telemetry.NewCounterVec(reg, sub, "attestations_total", "Node attestations by attestor and outcome (success, refused, banned, invalid, error).", "attestor", "outcome"),
		issued:               telemetry.NewCounterVec(reg, sub, "svids_issued_total", "SVIDs issued through the agent API, by kind (agent_x509, x509, jwt).", "kind"),
		syncSnapshots:        telemetry.NewCounterVec(reg, sub, "sync_snapshots_total", "Full entry snapshots sent to agents, by reason (initial, compacted, alias, node, lag, unknown_revision) and resumes (resume).", "reason"),
		syncStreams:          telemetry.NewGauge(reg, sub, "sync_streams", "Open Sync streams."),
		reattestations:       telemetry.NewCounterVec(reg, sub, "reattestations_total", "Continuous attestation rounds by attestor and outcome (success, refused, error: no verdict).", "attestor", "outcome"),
		reattestStreams:      telemetry.NewGauge(reg, sub, "reattest_streams", "Open Reattest streams: nodes reachable for continuous attestation."),
		attestRecordsDropped: telemetry.NewCounter(reg, sub, "attest_records_dropped_total", "Audit records of failed node attestations left out because failures came faster than the record rate limit."),
		workloadEvents:       telemetry.NewCounterVec(reg, sub, "workload_events_total", "Workload events reported by agents, by kind (attestation_failed, not_entitled) and outcome (recorded; rate_limited: dropped by the per-node limit).", "kind", "outcome"),
	}
}

// serialHex is how nhid spells a certificate serial in node records and
// the ledger: lowercase hex without leading zeros.
func serialHex(cert *x509.Certificate) string {
	return cert.SerialNumber.Text(16)
}
