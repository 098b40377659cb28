package agentapi

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// MaxWorkloadEvents is the most events one ReportWorkloadEvents call may
// carry.
const MaxWorkloadEvents = 500

// Bounds of one workload event's fields.
const (
	maxEventKind     = 64
	maxEventPath     = 4096
	maxEventMethod   = 256
	maxEventReason   = 1024
	maxEventSPIFFEID = 2048
)

// Workload event kinds, as proto nhid.agent.v1.WorkloadEvent spells them.
const (
	eventAttestationFailed = "attestation_failed"
	eventNotEntitled       = "not_entitled"
)

// The per-node limits on workload events. A node's events past the rate
// are dropped, counted under workload_events_total{outcome="rate_limited"},
// and logged at most once a dropLogEvery per node, so a node (or a local
// process hammering its Workload API) cannot fill the audit log. Reputation
// hears of one identity from one node at most once a reputationEvery, so a
// local process naming a co-located identity over and over moves its score
// once, not a thousand times.
const (
	workloadEventRate  = 50   // events per second, per node
	workloadEventBurst = 1000 // two full batches
	dropLogEvery       = time.Minute
	reputationEvery    = time.Minute
	// maxTrackedNodes bounds the limiter table; past it, nodes idle for
	// idleNodeAfter are forgotten.
	maxTrackedNodes = 4096
	idleNodeAfter   = 10 * time.Minute
	// maxTrackedIdentities bounds one node's reputation memory.
	maxTrackedIdentities = 1024
)

// eventsOnlyService serves ReportWorkloadEvents when the server serves no
// grants: the other AgentGrantService methods answer Unimplemented.
type eventsOnlyService struct {
	agentv1.UnimplementedAgentGrantServiceServer
	s *Service
}

// ReportWorkloadEvents records the workload events the calling node saw.
func (h *eventsOnlyService) ReportWorkloadEvents(ctx context.Context, req *agentv1.ReportWorkloadEventsRequest) (*agentv1.ReportWorkloadEventsResponse, error) {
	return h.s.reportWorkloadEvents(ctx, req)
}

// ReportWorkloadEvents records the workload events the calling node saw.
func (h *grantService) ReportWorkloadEvents(ctx context.Context, req *agentv1.ReportWorkloadEventsRequest) (*agentv1.ReportWorkloadEventsResponse, error) {
	return h.s.reportWorkloadEvents(ctx, req)
}

// reportWorkloadEvents validates the batch (a bad event refuses the whole
// batch, and nothing is recorded), admits what the node's rate allows,
// writes one workload.attest record per admitted event, and tells
// reputation of the identities named that the node serves.
func (s *Service) reportWorkloadEvents(ctx context.Context, req *agentv1.ReportWorkloadEventsRequest) (*agentv1.ReportWorkloadEventsResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkWorkloadEvents(req.GetEvents()); err != nil {
		return nil, err
	}
	nodeID := c.id.String()
	now := s.clock.Now()
	events, dropped, logDrop := s.events.admit(nodeID, req.GetEvents(), now)
	for _, ev := range req.GetEvents()[len(events):] {
		s.metrics.workloadEvents.WithLabelValues(ev.GetKind(), "rate_limited").Inc()
	}
	if logDrop {
		telemetry.Logger(ctx, s.log).Warn("workload events over the node's rate dropped",
			telemetry.Count, dropped, "rate_per_second", workloadEventRate)
	}
	if len(events) == 0 {
		return &agentv1.ReportWorkloadEventsResponse{}, nil
	}
	served, err := s.servedIdentities(ctx, c, events, now)
	if err != nil {
		// The records are still written, without owners; reputation
		// waits for a batch whose identities could be checked.
		telemetry.Logger(ctx, s.log).Warn("workload events: could not read the node's entries",
			telemetry.Error, err.Error())
	}
	for _, ev := range events {
		s.record(ctx, workloadRecord(nodeID, ev, served[ev.GetSpiffeId()], now))
		s.metrics.workloadEvents.WithLabelValues(ev.GetKind(), "recorded").Inc()
	}
	if s.checkTrusted(c.node) == nil {
		s.observeWorkloadFailures(ctx, nodeID, events, served, now)
	}
	return &agentv1.ReportWorkloadEventsResponse{}, nil
}

// checkWorkloadEvents checks every event, naming the first bad field.
func checkWorkloadEvents(events []*agentv1.WorkloadEvent) error {
	if n := len(events); n > MaxWorkloadEvents {
		return status.Errorf(codes.InvalidArgument, "events: %d events, at most %d allowed", n, MaxWorkloadEvents)
	}
	for i, ev := range events {
		if err := checkWorkloadEvent(ev); err != nil {
			return status.Errorf(codes.InvalidArgument, "events[%d].%v", i, err)
		}
	}
	return nil
}

func checkWorkloadEvent(ev *agentv1.WorkloadEvent) error {
	switch k := ev.GetKind(); {
	case k != eventAttestationFailed && k != eventNotEntitled:
		if len(k) > maxEventKind {
			k = k[:maxEventKind] + "..."
		}
		return fmt.Errorf("kind: %q is not one of %s, %s", k, eventAttestationFailed, eventNotEntitled)
	case ev.GetTime() < 0:
		return fmt.Errorf("time: %d is negative", ev.GetTime())
	case ev.GetPid() < 0:
		return fmt.Errorf("pid: %d is negative", ev.GetPid())
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"path", ev.GetPath(), maxEventPath},
		{"method", ev.GetMethod(), maxEventMethod},
		{"reason", ev.GetReason(), maxEventReason},
		{"spiffe_id", ev.GetSpiffeId(), maxEventSPIFFEID},
	} {
		if len(f.value) > f.max {
			return fmt.Errorf("%s: %d bytes, at most %d allowed", f.name, len(f.value), f.max)
		}
	}
	if id := ev.GetSpiffeId(); id != "" {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("spiffe_id: not a SPIFFE ID: %v", err)
		}
	}
	return nil
}

// servedIdentities maps the SPIFFE IDs the events name to the entries
// that give them and that the node serves now; IDs the node does not
// serve are absent. Entries are read only when some event names an ID.
func (s *Service) servedIdentities(ctx context.Context, c *caller, events []*agentv1.WorkloadEvent, now time.Time) (map[string]*typesv1.Entry, error) {
	named := make(map[string]bool)
	for _, ev := range events {
		if ev.GetSpiffeId() != "" {
			named[ev.GetSpiffeId()] = true
		}
	}
	if len(named) == 0 {
		return nil, nil
	}
	az, _, err := s.loadAuthz(ctx, c.node)
	if err != nil {
		return nil, err
	}
	parents := make([]string, 0, len(az.parents))
	for p := range az.parents {
		parents = append(parents, p)
	}
	sort.Strings(parents)
	entries, _, err := s.store.ListEntriesByParent(ctx, parents)
	if err != nil {
		return nil, err
	}
	served := make(map[string]*typesv1.Entry)
	for _, e := range entries {
		id := e.GetSpiffeId()
		if !named[id] || !az.allows(e, now) {
			continue
		}
		// Of several entries giving one ID, the lowest id speaks for it,
		// so that the owner named is the same from batch to batch.
		if cur, ok := served[id]; !ok || e.GetId() < cur.GetId() {
			served[id] = e
		}
	}
	return served, nil
}

// workloadRecord is the audit record of one workload event. The owner is
// named only for an identity the node serves: a name a process made up
// has no owner to speak for.
func workloadRecord(nodeID string, ev *agentv1.WorkloadEvent, e *typesv1.Entry, now time.Time) audit.Event {
	target := ev.GetSpiffeId()
	if target == "" {
		target = fmt.Sprintf("pid:%d uid:%d", ev.GetPid(), ev.GetUid())
	}
	outcome := audit.OutcomeFailure
	if ev.GetKind() == eventNotEntitled {
		outcome = audit.OutcomeDenied
	}
	seen := now
	if ev.GetTime() > 0 {
		seen = time.Unix(0, ev.GetTime())
	}
	details := map[string]any{
		"kind": ev.GetKind(), "pid": ev.GetPid(), "uid": ev.GetUid(), "gid": ev.GetGid(),
		"path": ev.GetPath(), "method": ev.GetMethod(), "seen_at": seen.UTC().Format(time.RFC3339Nano),
		"served": e != nil,
	}
	if e != nil {
		details["entry_id"] = e.GetId()
	}
	return audit.Event{
		Actor: nodeID, OnBehalfOf: e.GetOwner(), Action: audit.ActionWorkloadAttestFail, Target: target,
		Outcome: outcome, Reason: ev.GetReason(), Details: details,
	}
}

// observeWorkloadFailures tells reputation of each identity the batch
// names that the node serves, once per identity and batch, and not more
// often than reputationEvery per node and identity. A node never moves
// the score of an identity it does not serve.
func (s *Service) observeWorkloadFailures(ctx context.Context, nodeID string, events []*agentv1.WorkloadEvent, served map[string]*typesv1.Entry, now time.Time) {
	counts := make(map[string]int)
	var order []string
	for _, ev := range events {
		id := ev.GetSpiffeId()
		if served[id] == nil {
			continue
		}
		if counts[id] == 0 {
			order = append(order, id)
		}
		counts[id]++
	}
	for _, id := range order {
		if !s.events.mayObserve(nodeID, id, now) {
			continue
		}
		s.observe(ctx, reputation.Event{
			SPIFFEID: id, Owner: served[id].GetOwner(), Kind: reputation.KindAttestationFailed, Reporter: nodeID,
			Reason: fmt.Sprintf("%d workload attestation failure(s) naming this identity reported by node %s", counts[id], nodeID),
		})
	}
}

// eventLimits is the per-node rate limit of workload events and memory of
// the reputation events each node caused.
type eventLimits struct {
	rate  rate.Limit
	burst int

	mu    sync.Mutex
	nodes map[string]*nodeEvents
}

type nodeEvents struct {
	lim      *rate.Limiter
	lastSeen time.Time
	// dropped counts the events dropped since the last log line, lastLog.
	dropped  int
	lastLog  time.Time
	observed map[string]time.Time
}

func newEventLimits(r rate.Limit, burst int) *eventLimits {
	return &eventLimits{rate: r, burst: burst, nodes: make(map[string]*nodeEvents)}
}

func (l *eventLimits) node(id string, now time.Time) *nodeEvents {
	n, ok := l.nodes[id]
	if !ok {
		if len(l.nodes) >= maxTrackedNodes {
			for k, v := range l.nodes {
				if now.Sub(v.lastSeen) > idleNodeAfter {
					delete(l.nodes, k)
				}
			}
		}
		n = &nodeEvents{lim: rate.NewLimiter(l.rate, l.burst), observed: make(map[string]time.Time)}
		l.nodes[id] = n
	}
	n.lastSeen = now
	return n
}

// admit returns the prefix of events the node's rate allows now. When it
// drops some, dropped is how many were dropped since the node's last drop
// log line and logNow says whether to write one now.
func (l *eventLimits) admit(nodeID string, events []*agentv1.WorkloadEvent, now time.Time) (admitted []*agentv1.WorkloadEvent, dropped int, logNow bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.node(nodeID, now)
	k := min(len(events), max(0, int(n.lim.TokensAt(now))))
	if k > 0 {
		n.lim.AllowN(now, k)
	}
	if k == len(events) {
		return events, 0, false
	}
	n.dropped += len(events) - k
	if now.Sub(n.lastLog) >= dropLogEvery {
		dropped, n.dropped, n.lastLog = n.dropped, 0, now
		return events[:k], dropped, true
	}
	return events[:k], 0, false
}

// mayObserve reports whether node may move id's reputation now, and if so
// remembers that it did.
func (l *eventLimits) mayObserve(nodeID, id string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.node(nodeID, now)
	if last, ok := n.observed[id]; ok && now.Sub(last) < reputationEvery {
		return false
	}
	if len(n.observed) >= maxTrackedIdentities {
		clear(n.observed)
	}
	n.observed[id] = now
	return true
}
