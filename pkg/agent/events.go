package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// Bounds of the workload event reporting (see eventReporter).
const (
	// eventBatch is the most events one report carries: the server's
	// limit (agentapi.MaxWorkloadEvents).
	eventBatch = 500
	// eventQueue is the most events waiting; past it the oldest go.
	eventQueue = 10 * eventBatch
	// eventFlushEvery is how often waiting events are sent.
	eventFlushEvery = time.Second
	// eventSendTimeout bounds one report; eventFinalFlush the last one,
	// made while the agent stops.
	eventSendTimeout = 10 * time.Second
	eventFinalFlush  = 2 * time.Second
)

// reportSender sends one batch of workload events to the server;
// *serverConn is one.
type reportSender interface {
	ReportWorkloadEvents(ctx context.Context, in *agentv1.ReportWorkloadEventsRequest) error
}

// eventReporter sends what the agent sees on its Workload and Grant APIs
// that the server's audit log and reputation need: workload attestation
// failures and refused callers (events_sources.go). Events wait in a
// bounded queue and go to the server in batches, every eventFlushEvery or
// as soon as a batch is full. Adding never blocks the request that saw
// the event: a full queue drops its oldest event. A batch the server
// could not take (it restarted, the agent is reconnecting) stays queued
// for the next flush; one it refuses as invalid is dropped.
type eventReporter struct {
	server reportSender
	log    *slog.Logger
	every  time.Duration // a test seam

	mu      sync.Mutex
	queue   []*agentv1.WorkloadEvent
	failing bool // the last report failed; logged once until one passes
	kick    chan struct{}

	queued  *prometheus.CounterVec
	sent    prometheus.Counter
	dropped *prometheus.CounterVec
	waiting prometheus.Gauge
}

func newEventReporter(server reportSender, reg prometheus.Registerer, log *slog.Logger) *eventReporter {
	const sub = "agent"
	return &eventReporter{
		server:  server,
		log:     log,
		every:   eventFlushEvery,
		kick:    make(chan struct{}, 1),
		queued:  telemetry.NewCounterVec(reg, sub, "workload_events_total", "Workload events queued for the server, by kind (attestation_failed, not_entitled).", "kind"),
		sent:    telemetry.NewCounter(reg, sub, "workload_events_sent_total", "Workload events the server accepted."),
		dropped: telemetry.NewCounterVec(reg, sub, "workload_events_dropped_total", "Workload events dropped unsent, by reason (overflow: the queue was full; rejected: the server refused the batch).", "reason"),
		waiting: telemetry.NewGauge(reg, sub, "workload_events_queued", "Workload events waiting to be sent to the server."),
	}
}

// add queues ev without blocking.
func (r *eventReporter) add(ev *agentv1.WorkloadEvent) {
	r.queued.WithLabelValues(ev.GetKind()).Inc()
	r.mu.Lock()
	r.queue = append(r.queue, ev)
	full := len(r.queue) >= eventBatch
	r.trimLocked()
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// trimLocked drops the oldest events past the queue's bound.
func (r *eventReporter) trimLocked() {
	if over := len(r.queue) - eventQueue; over > 0 {
		clear(r.queue[:over])
		r.queue = r.queue[over:]
		r.dropped.WithLabelValues("overflow").Add(float64(over))
	}
	r.waiting.Set(float64(len(r.queue)))
}

// run flushes the queue every r.every and whenever a batch fills, until
// ctx ends; then it tries once more, briefly, so that events seen just
// before a stop are not lost when the server is there to take them.
func (r *eventReporter) run(ctx context.Context) {
	ticker := time.NewTicker(r.every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventFinalFlush)
			r.flush(final)
			cancel()
			return
		case <-ticker.C:
		case <-r.kick:
		}
		r.flush(ctx)
	}
}

// flush sends batches until the queue is empty or a report fails.
func (r *eventReporter) flush(ctx context.Context) {
	for ctx.Err() == nil {
		batch := r.take()
		if len(batch) == 0 {
			return
		}
		sendCtx, cancel := context.WithTimeout(ctx, eventSendTimeout)
		err := r.server.ReportWorkloadEvents(sendCtx, &agentv1.ReportWorkloadEventsRequest{Events: batch})
		cancel()
		switch code := status.Code(err); {
		case err == nil:
			r.sent.Add(float64(len(batch)))
			r.recovered()
		case code == codes.InvalidArgument || code == codes.Unimplemented:
			// Sending it again would not change the answer.
			r.dropped.WithLabelValues("rejected").Add(float64(len(batch)))
			r.log.Warn("nhid-server refused a batch of workload events; dropped",
				telemetry.Count, len(batch), telemetry.Error, err)
		default:
			r.requeue(batch)
			r.failed(err)
			return
		}
	}
}

// take removes and returns the oldest batch of events.
func (r *eventReporter) take() []*agentv1.WorkloadEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.queue), eventBatch)
	batch := append([]*agentv1.WorkloadEvent(nil), r.queue[:n]...)
	clear(r.queue[:n])
	r.queue = r.queue[n:]
	r.waiting.Set(float64(len(r.queue)))
	return batch
}

// requeue puts a batch that could not be sent back in front of the
// events that came meanwhile.
func (r *eventReporter) requeue(batch []*agentv1.WorkloadEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = append(batch, r.queue...)
	r.trimLocked()
}

func (r *eventReporter) failed(err error) {
	r.mu.Lock()
	first := !r.failing
	r.failing = true
	r.mu.Unlock()
	if first {
		r.log.Warn("reporting workload events to nhid-server failed; keeping them for the next try", telemetry.Error, err)
	}
}

func (r *eventReporter) recovered() {
	r.mu.Lock()
	was := r.failing
	r.failing = false
	r.mu.Unlock()
	if was {
		r.log.Info("reporting workload events to nhid-server works again")
	}
}

// ReportWorkloadEvents implements reportSender on the current connection.
func (s *serverConn) ReportWorkloadEvents(ctx context.Context, in *agentv1.ReportWorkloadEventsRequest) error {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return errNotConnected
	}
	_, err := agentv1.NewAgentGrantServiceClient(conn).ReportWorkloadEvents(ctx, in)
	return err
}
