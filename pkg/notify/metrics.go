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
		sent:    telemetry.NewCounterVec(reg, sub, "sent_total", "Notifications the webhook receiver accepted, by type.", "type"),
		failed:  telemetry.NewCounterVec(reg, sub, "failed_total", "Notifications given up, by type and reason (rejected, exhausted, stopped, queue_full, encode).", "type", "reason"),
		retries: telemetry.NewCounter(reg, sub, "retries_total", "Webhook attempts that failed and were retried."),
		latency: telemetry.NewHistogram(reg, sub, "attempt_duration_seconds", "Duration of webhook attempts.", prometheus.ExponentialBuckets(0.005, 4, 8)),
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
