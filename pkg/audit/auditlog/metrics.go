package auditlog

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

// Reasons a record is dropped (label of records_dropped_total).
const (
	dropBufferFull  = "buffer_full"
	dropStopped     = "stopped"
	dropRejected    = "rejected"
	dropStoreClosed = "store_closed"
	dropShutdown    = "shutdown_timeout"
)

type metrics struct {
	appended    prometheus.Counter
	dropped     *prometheus.CounterVec
	blocked     prometheus.Counter
	batchSize   prometheus.Histogram
	lag         prometheus.Histogram
	appendErrs  prometheus.Counter
	checkpoints prometheus.Counter
	sinkErrs    prometheus.Counter
	head        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, buffered func() float64) *metrics {
	const sub = "audit"
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: telemetry.Namespace, Subsystem: sub, Name: name, Help: help}
	}
	m := &metrics{
		appended: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(opts(
			"records_appended_total", "Audit records this server appended to the chain.")))),
		dropped: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts(opts(
			"records_dropped_total", "Audit records lost, by reason: buffer_full, stopped, rejected, store_closed, shutdown_timeout.")),
			[]string{"reason"})),
		blocked: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(opts(
			"record_blocked_total", "Record calls that had to wait for room in the buffer (backpressure).")))),
		batchSize: telemetry.NewHistogram(reg, sub, "append_batch_records", "Records per append transaction (group commit).", prometheus.ExponentialBuckets(1, 4, 8)),
		lag:       telemetry.NewHistogram(reg, sub, "commit_lag_seconds", "Time from Record to the record's commit.", prometheus.ExponentialBuckets(0.0005, 4, 10)),
		appendErrs: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(opts(
			"append_errors_total", "Failed append attempts (retried with backoff).")))),
		checkpoints: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(opts(
			"checkpoints_total", "Checkpoints this server signed and stored.")))),
		sinkErrs: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(opts(
			"sink_errors_total", "Failed writes of JSON lines to the sink.")))),
		head: telemetry.RegisterOrExisting(reg, prometheus.NewGauge(prometheus.GaugeOpts(opts(
			"head_seq", "Seq of the newest record this server appended.")))),
	}
	telemetry.RegisterOrExisting(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts(
		"buffered_records", "Records waiting in the buffer to be appended.")), buffered))
	return m
}
