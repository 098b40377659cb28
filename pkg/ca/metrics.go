package ca

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

const (
	kindX509 = "x509"
	kindJWT  = "jwt"

	stepPrepare  = "prepare"
	stepActivate = "activate"
	stepRemove   = "remove"
)

type metrics struct {
	collectors []prometheus.Collector
	x509Signed prometheus.Counter
	jwtSigned  prometheus.Counter
	rotations  *prometheus.CounterVec
	expiry     *prometheus.GaugeVec
}

// newMetrics builds the CA's collectors and registers them on reg, if set.
// Children are resolved once, so signing pays for an atomic add only.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	signed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "ca", Name: "svids_signed_total",
		Help: "SVIDs signed, by type (x509, jwt).",
	}, []string{"type"})
	rotations := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "ca", Name: "rotations_total",
		Help: "Rotation steps taken, by kind of key (x509, jwt) and step (prepare, activate, remove).",
	}, []string{"kind", "step"})
	expiry := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "ca", Name: "active_expiry_timestamp_seconds",
		Help: "Unix time at which the active signing key expires, by kind (x509, jwt).",
	}, []string{"kind"})
	collectors := []prometheus.Collector{signed, rotations, expiry}
	if reg != nil {
		for i, c := range collectors {
			if err := reg.Register(c); err != nil {
				for _, done := range collectors[:i] {
					reg.Unregister(done)
				}
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("ca config: Metrics: CA metrics already registered (one CA per registry): %w", err)
				}
				return nil, fmt.Errorf("ca config: Metrics: %w", err)
			}
		}
	}
	for _, k := range []string{kindX509, kindJWT} {
		for _, s := range []string{stepPrepare, stepActivate, stepRemove} {
			rotations.WithLabelValues(k, s)
		}
	}
	return &metrics{
		collectors: collectors,
		x509Signed: signed.WithLabelValues(kindX509),
		jwtSigned:  signed.WithLabelValues(kindJWT),
		rotations:  rotations,
		expiry:     expiry,
	}, nil
}

// unregister removes the collectors from reg, if set.
func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
