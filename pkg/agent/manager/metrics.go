package manager

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

type metrics struct {
	x509Minted   prometheus.Counter
	x509Failures prometheus.Counter
	x509Served   prometheus.Counter
	jwtMinted    prometheus.Counter
	jwtFailures  prometheus.Counter
	jwtServed    prometheus.Counter
	updates      prometheus.Counter
	entries      prometheus.Gauge
	svids        prometheus.Gauge
	subs         prometheus.Gauge
	rotationLag  prometheus.Gauge
	federated    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: name, Help: help,
		})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: name, Help: help,
		})
	}
	m := &metrics{
		x509Minted:   counter("x509_svids_minted_total", "X.509-SVIDs minted for workload entries."),
		x509Failures: counter("x509_svid_mint_failures_total", "X.509-SVIDs the agent asked for and did not get."),
		x509Served:   counter("x509_svids_served_total", "X.509-SVIDs delivered to workloads (one per identity per update)."),
		jwtMinted:    counter("jwt_svids_minted_total", "JWT-SVIDs minted for workloads."),
		jwtFailures:  counter("jwt_svid_mint_failures_total", "JWT-SVID requests the server did not answer with a token."),
		jwtServed:    counter("jwt_svids_served_total", "JWT-SVIDs returned to workloads, minted or cached."),
		updates:      counter("workload_updates_sent_total", "Workload API updates pushed to subscriptions."),
		entries:      gauge("cached_entries", "Registration entries held by the agent."),
		svids:        gauge("held_svids", "X.509-SVIDs held (pre-minted or minted on demand)."),
		subs:         gauge("subscriptions", "Open Workload API subscriptions."),
		rotationLag: gauge("svid_rotation_lag_seconds",
			"How far past its rotation point the most overdue held X.509-SVID is; 0 when none is overdue."),
		federated: gauge("federated_bundles", "Bundles of federated trust domains held for workloads."),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.x509Minted, m.x509Failures, m.x509Served, m.jwtMinted, m.jwtFailures,
		m.jwtServed, m.updates, m.entries, m.svids, m.subs, m.rotationLag, m.federated,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
