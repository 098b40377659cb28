package notify

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/telemetry"
)

type webhookMetrics struct {
	sent    *prometheus.CounterVec
	failed  *prometheus.CounterVec
	retries prometheus.Counter
	latency prometheus.Histogram
}

func newWebhookMetrics(reg prometheus.Registerer, queued func() float64) *webhookMetrics {
	const sub = "notify"
	m := &webhookMetrics{
		sent: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "sent_total",
			Help: "Notifications the webhook receiver accepted, by type.",
		}, []string{"type"})),
		failed: telemetry.RegisterOrExisting(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "failed_total",
			Help: "Notifications given up, by type and reason (rejected, exhausted, stopped, queue_full, encode).",
		}, []string{"type", "reason"})),
		retries: telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "retries_total",
			Help: "Webhook attempts that failed and were retried.",
		})),
		latency: telemetry.RegisterOrExisting(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "attempt_duration_seconds",
			Help:    "Duration of webhook attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8),
		})),
	}
	if reg != nil {
		// A second sender on the same registry (tests) keeps the first gauge.
		_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "queue_length",
			Help: "Notifications waiting for delivery.",
		}, queued))
	}
	return m
}
