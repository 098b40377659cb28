package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// sendFunc stands in for the connection to the server: the reporter's
// queue is what these tests exercise, the transport is tested end to end
// in events_test.go.
type sendFunc func(*agentv1.ReportWorkloadEventsRequest) error

func (f sendFunc) ReportWorkloadEvents(_ context.Context, in *agentv1.ReportWorkloadEventsRequest) error {
	return f(in)
}

func newTestReporter(send sendFunc) *eventReporter {
	return newEventReporter(send, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
}

func TestEventReporter_KeepsTheNewestWhileTheServerIsAwayThenSendsThemInOrder(t *testing.T) {
	var (
		down    atomic.Bool
		mu      sync.Mutex
		batches [][]int32
	)
	down.Store(true)
	r := newTestReporter(func(in *agentv1.ReportWorkloadEventsRequest) error {
		if down.Load() {
			return status.Error(codes.Unavailable, "connection refused")
		}
		var pids []int32
		for _, ev := range in.GetEvents() {
			pids = append(pids, ev.GetPid())
		}
		mu.Lock()
		batches = append(batches, pids)
		mu.Unlock()
		return nil
	})
	const extra = 10
	for i := range eventQueue + extra {
		r.add(&agentv1.WorkloadEvent{Kind: eventNotEntitled, Pid: int32(i)})
	}
	r.flush(context.Background())
	if got := testutil.ToFloat64(r.dropped.WithLabelValues("overflow")); got != extra {
		t.Errorf("dropped on overflow = %v, want %d", got, extra)
	}
	if got := testutil.ToFloat64(r.waiting); got != eventQueue {
		t.Errorf("queued = %v after a failed flush, want %d: a failed batch is kept", got, eventQueue)
	}

	down.Store(false)
	r.flush(context.Background())
	var all []int32
	for _, b := range batches {
		if len(b) > eventBatch {
			t.Errorf("a batch of %d events, at most %d allowed", len(b), eventBatch)
		}
		all = append(all, b...)
	}
	if len(all) != eventQueue || all[0] != extra || all[len(all)-1] != eventQueue+extra-1 {
		t.Fatalf("sent %d events from pid %d to %d, want %d from %d to %d", len(all), all[0], all[len(all)-1], eventQueue, extra, eventQueue+extra-1)
	}
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("events out of order at %d: %d after %d", i, all[i], all[i-1])
		}
	}
	if got := testutil.ToFloat64(r.sent); got != eventQueue {
		t.Errorf("sent = %v, want %d", got, eventQueue)
	}
}

func TestEventReporter_DropsABatchTheServerRefuses(t *testing.T) {
	r := newTestReporter(func(*agentv1.ReportWorkloadEventsRequest) error {
		return status.Error(codes.InvalidArgument, "events[0].kind: bad")
	})
	for range 3 {
		r.add(&agentv1.WorkloadEvent{Kind: eventNotEntitled})
	}
	r.flush(context.Background())
	if got := testutil.ToFloat64(r.dropped.WithLabelValues("rejected")); got != 3 {
		t.Errorf("dropped as rejected = %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.waiting); got != 0 {
		t.Errorf("queued = %v, want 0: resending would be refused again", got)
	}
}

func TestEventReporter_AFullBatchIsSentAtOnce(t *testing.T) {
	sent := make(chan int, 10)
	r := newTestReporter(func(in *agentv1.ReportWorkloadEventsRequest) error {
		sent <- len(in.GetEvents())
		return nil
	})
	r.every = 1 << 62 // only a full batch triggers a flush
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()
	for range eventBatch {
		r.add(&agentv1.WorkloadEvent{Kind: eventAttestationFailed})
	}
	if n := <-sent; n != eventBatch {
		t.Errorf("first report carried %d events, want %d", n, eventBatch)
	}
	cancel()
	<-done
}

func TestClean_MakesValidBoundedUTF8(t *testing.T) {
	got := clean("/tmp/\xff"+strings.Repeat("é", 10), 8)
	if !utf8.ValidString(got) || len(got) > 8 {
		t.Errorf("clean = %q (%d bytes), want valid UTF-8 of at most 8 bytes", got, len(got))
	}
	if cleanID("spiffe://example.org/w") != "spiffe://example.org/w" || cleanID("not an id") != "" {
		t.Error("cleanID keeps SPIFFE IDs and drops anything else")
	}
}
