package workloadapi

import (
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

const subsystem = "workloadapi"

// SVID kinds, the values of the "kind" label of svids_served_total.
const (
	kindX509 = "x509"
	kindJWT  = "jwt"
)

// metrics are the handler's Prometheus collectors.
type metrics struct {
	// requests counts finished RPCs by method and gRPC code; a stream
	// counts when it ends.
	requests *prometheus.CounterVec
	// svids counts SVIDs handed to workloads: every X.509-SVID in every
	// stream message, every JWT-SVID minted.
	svids *prometheus.CounterVec
	// streams is the number of open streams by method.
	streams *prometheus.GaugeVec
	// firstResponse is the time from the start of an RPC to its first
	// response message (its only one, for unary RPCs).
	firstResponse *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "requests_total",
			Help: "Workload API RPCs finished, by method and gRPC status code.",
		}, []string{"method", "code"}),
		svids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "svids_served_total",
			Help: "SVIDs sent to workloads, by kind (x509, jwt).",
		}, []string{"kind"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name: "active_streams",
			Help: "Workload API streams currently open, by method.",
		}, []string{"method"}),
		firstResponse: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: subsystem,
			Name:    "first_response_seconds",
			Help:    "Time from the start of a Workload API RPC to its first response message.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method"}),
	}
	// A second handler on the same registry (an agent restarted in one
	// process) shares the first one's collectors rather than failing.
	m.requests = telemetry.RegisterOrExisting(reg, m.requests)
	m.svids = telemetry.RegisterOrExisting(reg, m.svids)
	m.streams = telemetry.RegisterOrExisting(reg, m.streams)
	m.firstResponse = telemetry.RegisterOrExisting(reg, m.firstResponse)
	return m
}
