package agentapi

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// maxSyncMessageBytes bounds one SyncResponse below gRPC's default 4 MiB
// receive limit, whatever the page size, so large entries cannot make a
// page the agent refuses.
const maxSyncMessageBytes = 3 << 20

// maxEventBatch bounds the events folded into one change message.
const maxEventBatch = 1000

// Snapshot reasons, the values of the sync_snapshots_total reason label.
const (
	reasonInitial   = "initial"
	reasonUntracked = "untracked"
	reasonCompacted = "compacted"
	reasonUnknown   = "unknown_revision"
	reasonAlias     = "alias"
	reasonNode      = "node"
	reasonLag       = "lag"
	reasonResume    = "resume"
)

// syncStream is one Sync call: the protocol of docs/ARCHITECTURE.md.
type syncStream struct {
	s        *Service
	stream   agentv1.AgentService_SyncServer
	ctx      context.Context
	log      *slog.Logger
	c        *caller
	pageSize int

	events <-chan store.Event
	// node is the node record the current authorisation was computed from.
	node *typesv1.Node
	az   *authz
	// floor is the revision the last snapshot or resume was read at;
	// events at or below it are already reflected.
	floor     int64
	bundleSeq uint64
	sentFirst bool
	expiry    expiryTracker
	// holding: the stream holds a read slot of the sync gate.
	holding bool
}

// Sync streams the entries authorised for the calling node.
func (s *Service) Sync(req *agentv1.SyncRequest, stream agentv1.AgentService_SyncServer) error {
	if req.GetSinceRevision() < 0 {
		return status.Errorf(codes.InvalidArgument, "since_revision: %d is negative", req.GetSinceRevision())
	}
	if ps := req.GetPageSize(); ps < 0 || ps > MaxSnapshotPageSize {
		return status.Errorf(codes.InvalidArgument, "page_size: %d is not between 0 and %d", ps, MaxSnapshotPageSize)
	}
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	ss := &syncStream{
		s: s, stream: stream, ctx: ctx, c: c,
		log:      telemetry.Logger(ctx, s.log),
		pageSize: s.cfg.SnapshotPageSize,
		expiry:   expiryTracker{at: make(map[string]int64)},
	}
	if req.GetPageSize() > 0 {
		ss.pageSize = int(req.GetPageSize())
	}
	s.metrics.syncStreams.Inc()
	defer s.metrics.syncStreams.Dec()
	return ss.run(req.GetSinceRevision())
}

func (ss *syncStream) run(since int64) error {
	// Subscribe before reading anything, so no change between the read
	// and the subscription is lost.
	if err := ss.subscribe(); err != nil {
		return err
	}
	if err := ss.gated(func() error { return ss.start(since) }); err != nil {
		return err
	}
	for {
		timer, stop := ss.expiry.timer(ss.s.clock.Now())
		select {
		case <-ss.ctx.Done():
			stop()
			return status.FromContextError(ss.ctx.Err()).Err()
		case <-ss.s.stopping:
			stop()
			return status.Error(codes.Unavailable, "server shutting down; reconnect and resume")
		case <-timer:
			if err := ss.sendExpired(); err != nil {
				return err
			}
		case ev, ok := <-ss.events:
			stop()
			if err := ss.handle(ev, ok); err != nil {
				return err
			}
		}
	}
}

func (ss *syncStream) subscribe() error {
	events, err := ss.s.store.Watch(ss.ctx)
	if err != nil {
		return ss.s.internal(ss.ctx, "watch store", err)
	}
	ss.events = events
	return nil
}

// handle processes ev and whatever else is already queued behind it.
func (ss *syncStream) handle(ev store.Event, ok bool) error {
	if !ok {
		if ss.ctx.Err() != nil {
			return status.FromContextError(ss.ctx.Err()).Err()
		}
		// The store dropped this watcher for falling behind: changes were
		// lost, so start over from a fresh subscription and snapshot.
		ss.log.Warn("sync stream fell behind the store; sending a new snapshot")
		if err := ss.subscribe(); err != nil {
			return err
		}
		return ss.snapshot(reasonLag)
	}
	batch := []store.Event{ev}
drain:
	for len(batch) < maxEventBatch {
		select {
		case next, more := <-ss.events:
			if !more {
				// Apply what arrived; the lag is seen on the next receive.
				ss.events = closedEvents
				break drain
			}
			batch = append(batch, next)
		default:
			break drain
		}
	}
	return ss.applyEvents(batch)
}

// closedEvents stands in for a watcher channel found closed while
// draining, so the main loop reports the lag on its next receive.
var closedEvents = func() <-chan store.Event {
	ch := make(chan store.Event)
	close(ch)
	return ch
}()

// send writes one message, adding the bundle and the federated bundles
// to the first message of the stream.
func (ss *syncStream) send(msg *agentv1.SyncResponse) error {
	if !ss.sentFirst && msg.Bundle == nil {
		bundle, _, err := ss.s.bundles.Current(ss.ctx)
		if err != nil {
			return ss.s.internal(ss.ctx, "read bundle", err)
		}
		msg.Bundle = bundle
	}
	if !ss.sentFirst && !msg.FederatedBundlesSet {
		if err := ss.attachFederated(msg); err != nil {
			return err
		}
	}
	if msg.Bundle != nil {
		ss.bundleSeq = msg.Bundle.GetSequenceNumber()
	}
	ss.sentFirst = true
	if err := ss.stream.Send(msg); err != nil {
		return err
	}
	return nil
}

// expiryTracker remembers when served entries expire, so the agent is
// told to drop them then: expiry changes no revision, so no event would.
type expiryTracker struct {
	at map[string]int64 // entry id → expires_at (unix seconds)
}

func (t *expiryTracker) set(e *typesv1.Entry) {
	if e.GetExpiresAt() != 0 {
		t.at[e.GetId()] = e.GetExpiresAt()
	} else {
		delete(t.at, e.GetId())
	}
}

func (t *expiryTracker) forget(id string) { delete(t.at, id) }

func (t *expiryTracker) reset() { clear(t.at) }

// timer fires at the next expiry; a nil channel when nothing expires.
func (t *expiryTracker) timer(now time.Time) (<-chan time.Time, func()) {
	var next int64
	for _, exp := range t.at {
		if next == 0 || exp < next {
			next = exp
		}
	}
	if next == 0 {
		return nil, func() {}
	}
	tm := time.NewTimer(max(time.Unix(next, 0).Sub(now), 0))
	return tm.C, func() { tm.Stop() }
}

// due removes and returns the ids expired at now.
func (t *expiryTracker) due(now time.Time) []string {
	var ids []string
	for id, exp := range t.at {
		if now.Unix() >= exp {
			ids = append(ids, id)
			delete(t.at, id)
		}
	}
	return ids
}

func (ss *syncStream) sendExpired() error {
	ids := ss.expiry.due(ss.s.clock.Now())
	if len(ids) == 0 {
		return nil
	}
	// No revision: expiry is not a store change, and the agent's resume
	// point must not move past changes it has not seen.
	return ss.send(&agentv1.SyncResponse{DeletedIds: ids})
}

// attachFederated puts the complete set of federated bundles (every
// stored bundle but the trust domain's own) on msg. It is read again
// whenever one changes: partner bundles change rarely, and a fresh read
// cannot regress the way replaying events over an older read could.
// sendPages counts the set against the page's size budget; the agent
// accepts messages far larger than a page (maxServerMessage there) for
// partners that publish large bundles.
func (ss *syncStream) attachFederated(msg *agentv1.SyncResponse) error {
	all, err := ss.s.store.ListBundles(ss.ctx)
	if err != nil {
		return ss.s.internal(ss.ctx, "read federated bundles", err)
	}
	msg.FederatedBundles = slices.DeleteFunc(all, func(b *typesv1.Bundle) bool { return b.GetTrustDomain() == ss.s.td.Name() })
	msg.FederatedBundlesSet = true
	return nil
}
