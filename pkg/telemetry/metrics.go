package telemetry

import "github.com/prometheus/client_golang/prometheus"

// The constructors below build a collector named
// nhid_<subsystem>_<name>, register it on reg (RegisterOrExisting: the
// collector already registered under that name is returned, a nil reg
// leaves it unregistered) and return it: one line per metric instead of
// the options struct each declaration repeated.

// NewCounter registers a counter.
func NewCounter(reg prometheus.Registerer, subsystem, name, help string) prometheus.Counter {
	return RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help,
	}))
}

// NewCounterVec registers a counter with labels.
func NewCounterVec(reg prometheus.Registerer, subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	return RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help,
	}, labels))
}

// NewGauge registers a gauge.
func NewGauge(reg prometheus.Registerer, subsystem, name, help string) prometheus.Gauge {
	return RegisterOrExisting(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help,
	}))
}

// NewGaugeVec registers a gauge with labels.
func NewGaugeVec(reg prometheus.Registerer, subsystem, name, help string, labels ...string) *prometheus.GaugeVec {
	return RegisterOrExisting(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help,
	}, labels))
}

// NewHistogram registers a histogram with buckets (nil: Prometheus's
// defaults).
func NewHistogram(reg prometheus.Registerer, subsystem, name, help string, buckets []float64) prometheus.Histogram {
	return RegisterOrExisting(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help, Buckets: buckets,
	}))
}

// NewHistogramVec registers a histogram with buckets and labels.
func NewHistogramVec(reg prometheus.Registerer, subsystem, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return RegisterOrExisting(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help, Buckets: buckets,
	}, labels))
}
