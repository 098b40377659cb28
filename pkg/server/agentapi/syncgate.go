package agentapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/telemetry"
)

// Sync backpressure. A snapshot or a resume reads every entry it sends
// into memory, so a reconnect storm (every agent of a cluster after a
// server restart) would make memory grow with the number of agents. The
// gate lets a bounded number of them read at once and queues a bounded
// number more; the rest are told to come back later: Unavailable, with a
// retry-after trailer (seconds) that the agent honours. Memory then grows
// with the slots, not with the agents.
const (
	// DefaultSyncReads is how many Sync streams may read a snapshot or a
	// resume at once.
	DefaultSyncReads = 32
	// DefaultSyncQueue is how many more may wait for a slot.
	DefaultSyncQueue = 512
	// RetryAfterKey is the trailer that tells a refused agent how many
	// seconds to wait before it reconnects.
	RetryAfterKey = "retry-after"
	// maxRetryAfter caps the hint.
	maxRetryAfter = 30 * time.Second
)

// syncGate bounds concurrent Sync reads and the queue for them.
type syncGate struct {
	slots    chan struct{}
	waiting  atomic.Int64
	maxQueue int64
	refused  prometheus.Counter
}

// newSyncGate builds the gate; reads and queue of 0 take the defaults,
// a negative queue means none.
func newSyncGate(reads, queue int, reg prometheus.Registerer) *syncGate {
	if reads <= 0 {
		reads = DefaultSyncReads
	}
	if queue < 0 {
		queue = 0
	} else if queue == 0 {
		queue = DefaultSyncQueue
	}
	g := &syncGate{slots: make(chan struct{}, reads), maxQueue: int64(queue)}
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: telemetry.Namespace, Subsystem: "agentapi", Name: name, Help: help}
	}
	g.refused = telemetry.RegisterOrExisting(reg, prometheus.NewCounter(prometheus.CounterOpts(
		opts("sync_refused_total", "Sync streams refused with a retry-after hint because the read queue was full."))))
	if reg != nil {
		// Gauge funcs read this gate; a second service on the registry
		// (tests) keeps the first one's.
		_ = reg.Register(prometheus.NewGaugeFunc(opts("sync_reads", "Sync streams reading a snapshot or resume now."),
			func() float64 { return float64(len(g.slots)) }))
		_ = reg.Register(prometheus.NewGaugeFunc(opts("sync_waiting", "Sync streams waiting for a read slot."),
			func() float64 { return float64(g.waiting.Load()) }))
	}
	return g
}

// enter waits for a slot and returns its release. With the queue full it
// refuses at once, setting the retry-after trailer on stream.
func (g *syncGate) enter(ctx context.Context, stream grpc.ServerStream) (func(), error) {
	release := func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	if n := g.waiting.Add(1); n > g.maxQueue {
		g.waiting.Add(-1)
		return nil, g.refuse(stream, n)
	}
	defer g.waiting.Add(-1)
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// refuse answers a stream that found the queue full.
func (g *syncGate) refuse(stream grpc.ServerStream, waiting int64) error {
	g.refused.Inc()
	after := g.retryAfter(waiting)
	secs := int(after / time.Second)
	stream.SetTrailer(metadata.Pairs(RetryAfterKey, strconv.Itoa(secs)))
	return status.Error(codes.Unavailable, fmt.Sprintf("server busy: too many agents are syncing; retry in %ds", secs))
}

// retryAfter spreads refused agents over a window that grows with the
// backlog: about one queue's worth of slots' time per queue, jittered so
// that they do not come back together.
func (g *syncGate) retryAfter(waiting int64) time.Duration {
	backlog := float64(waiting) / float64(cap(g.slots))
	base := time.Duration(1+backlog/4) * time.Second
	d := time.Duration(float64(base) * (0.5 + rand.Float64()))
	return min(max(d, time.Second), maxRetryAfter).Round(time.Second)
}

// gated runs fn holding a read slot, unless the stream holds one already
// (a resume that turns into a snapshot).
func (ss *syncStream) gated(fn func() error) error {
	if ss.holding {
		return fn()
	}
	release, err := ss.s.syncGate.enter(ss.ctx, ss.stream)
	if err != nil {
		return err
	}
	ss.holding = true
	defer func() {
		ss.holding = false
		release()
	}()
	return fn()
}
