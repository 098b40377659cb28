package grants

import (
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Request validates the caller's grant request, forwards it for the
// caller's entry, and relays the server's answers message by message, so
// that a caller can wait for a human's approval; a wait broken by the
// server resumes (relay.resume). The caller leaving cancels the request
// upstream.
func (h *Handler) Request(req *grantv1.GrantRequest, stream grpc.ServerStreamingServer[grantv1.GrantStatus]) (err error) {
	c := h.begin(stream.Context(), methodRequest)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return err
	}
	// Validated before spiffe_id is used: it is bounded there.
	if err := grantreq.ValidateRequest(req); err != nil {
		return &workloadapi.StatusError{Code: codes.InvalidArgument, Msg: err.Error()}
	}
	entry, err := chooseEntry(c.identities, req.GetSpiffeId())
	if err != nil {
		return err
	}
	c.log = c.log.With(telemetry.EntryID, entry.GetId(), telemetry.SPIFFEID, entry.GetSpiffeId())
	up, err := h.server.RequestGrant(c.ctx, &agentv1.AgentGrantRequest{EntryId: entry.GetId(), Request: req})
	if err != nil {
		return &upstreamError{err: err}
	}
	r := &relay{c: c, down: stream, entryID: entry.GetId()}
	defer r.close()
	return r.run(up)
}

// errNoDecision is the server ending a status stream before the decision.
var errNoDecision = &workloadapi.StatusError{Code: codes.Unavailable, Msg: "nhid-server ended the request without a decision; retry"}

// relay forwards the server's status messages of one grant request to the
// workload until the decision. Once the grant waits for approval, a
// broken stream is resumed with WaitGrant rather than failed.
type relay struct {
	c       *call
	down    grpc.ServerStreamingServer[grantv1.GrantStatus]
	entryID string

	grantID  string
	pending  bool // PENDING_APPROVAL was relayed
	received int  // messages received from the server, on every stream
}

func (r *relay) close() {
	if r.pending {
		r.c.h.metrics.pending.Dec()
	}
}

// run follows up, then resumes while the grant waits and the failure is
// one a later attempt may not have.
func (r *relay) run(up grpc.ServerStreamingClient[grantv1.GrantStatus]) error {
	err := r.follow(up)
	if err == nil || !r.pending || r.grantID == "" {
		return err
	}
	return r.resume(err)
}

// follow relays up's messages until the decision (nil) or a failure.
func (r *relay) follow(up grpc.ServerStreamingClient[grantv1.GrantStatus]) error {
	for {
		msg, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return errNoDecision
		}
		if err != nil {
			return &upstreamError{err: err}
		}
		r.received++
		if r.grantID == "" && msg.GetGrantId() != "" {
			r.grantID = msg.GetGrantId()
			r.c.log = r.c.log.With(telemetry.GrantID, r.grantID)
		}
		switch msg.GetState() {
		case grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL:
			if r.pending {
				continue // a resumed wait starts by saying it waits
			}
			if err := r.down.Send(msg); err != nil {
				return err
			}
			r.pending = true
			r.c.h.metrics.pending.Inc()
			r.c.log.Info("grant waits for approval", telemetry.Reason, msg.GetReason(), telemetry.ExpiresAt, msg.GetExpiresAt())
		case grantv1.GrantState_GRANT_STATE_GRANTED, grantv1.GrantState_GRANT_STATE_DENIED:
			if err := r.down.Send(msg); err != nil {
				return err
			}
			r.c.decided(msg, r.pending)
			r.c.drain(up)
			return nil
		default:
			if err := r.down.Send(msg); err != nil {
				return err
			}
		}
	}
}

// Backoff of resumed waits: a server restart takes seconds, a failover
// to another server about as long.
const (
	resumeBaseDelay = 250 * time.Millisecond
	resumeMaxDelay  = 5 * time.Second
)

// resume waits for the decision again through WaitGrant after cause broke
// the wait, retrying with jittered exponential backoff until the decision
// arrives, a failure says retrying is pointless, or the call's context
// ends (the workload hung up or the agent stops).
func (r *relay) resume(cause error) error {
	delay := resumeBaseDelay
	for attempt := 1; ; attempt++ {
		if !resumable(cause) {
			return cause
		}
		r.c.log.Warn("the wait for approval broke; resuming it", telemetry.Error, cause.Error(), "attempt", attempt)
		t := time.NewTimer(jitter(delay))
		select {
		case <-r.c.ctx.Done():
			t.Stop()
			return r.c.ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, resumeMaxDelay)
		r.c.h.metrics.resumes.Inc()
		up, err := r.c.h.server.WaitGrant(r.c.ctx, &agentv1.AgentWaitGrantRequest{EntryIds: []string{r.entryID}, GrantId: r.grantID})
		if err != nil {
			cause = &upstreamError{err: err}
			continue
		}
		before := r.received
		if cause = r.follow(up); cause == nil {
			return nil
		}
		if r.received > before {
			delay = resumeBaseDelay // the server answered: start over
		}
	}
}

// resumable reports whether a failure of the wait may pass: the server
// or the way to it failing, as opposed to an answer about the grant.
func resumable(err error) bool {
	if errors.Is(err, errNoDecision) {
		return true
	}
	var ue *upstreamError
	if !errors.As(err, &ue) {
		return false
	}
	switch status.Code(ue.err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.FailedPrecondition,
		codes.Unimplemented, codes.OutOfRange, codes.AlreadyExists:
		return false
	}
	return true
}

// jitter spreads d by ±20%, so that agents resuming after one server
// restart do not all call at once.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

// decided records the decision. The token is never logged.
func (c *call) decided(msg *grantv1.GrantStatus, waited bool) {
	outcome := "granted"
	if msg.GetState() == grantv1.GrantState_GRANT_STATE_DENIED {
		outcome = "denied"
	}
	c.h.metrics.outcomes.WithLabelValues(outcome).Inc()
	if !waited {
		c.h.metrics.decision.Observe(time.Since(c.start).Seconds())
	}
	c.log.Info("grant "+outcome, telemetry.Rule, msg.GetRule(), telemetry.Reason, msg.GetReason(),
		telemetry.Scopes, msg.GetScopes(), telemetry.ExpiresAt, msg.GetExpiresAt())
}

// drain waits for the server to end the stream after its decision, so
// the server's side finishes before ours cancels it.
func (c *call) drain(up grpc.ServerStreamingClient[grantv1.GrantStatus]) {
	if msg, err := up.Recv(); err == nil {
		c.log.Warn("nhid-server sent a message after the decision; ignored", telemetry.Status, msg.GetState().String())
	}
}

// chooseEntry picks the entry a grant is for: the one of spiffeID when it
// is set, else the caller's only identity.
func chooseEntry(ids []workloadapi.Identity, spiffeID string) (*typesv1.Entry, error) {
	var matched []*typesv1.Entry
	distinct := make(map[string]bool)
	for _, id := range ids {
		distinct[id.Entry.GetSpiffeId()] = true
		if spiffeID == "" || id.Entry.GetSpiffeId() == spiffeID {
			matched = append(matched, id.Entry)
		}
	}
	switch {
	case spiffeID == "" && len(distinct) > 1:
		return nil, invalidArgument("caller holds several identities; set spiffe_id")
	case len(matched) == 0:
		return nil, &workloadapi.StatusError{Code: codes.PermissionDenied, Msg: "spiffe_id: " + spiffeID + NotHeldSuffix}
	case len(matched) > 1:
		// Entries with one SPIFFE ID may differ in purpose, owner and
		// scope ceiling: the operator has to make the registration
		// unambiguous, the workload cannot.
		return nil, &workloadapi.StatusError{Code: codes.FailedPrecondition,
			Msg: "several registration entries give the caller " + matched[0].GetSpiffeId() + "; a grant needs exactly one"}
	}
	return matched[0], nil
}

// entryIDs lists the entries of ids, optionally only those of spiffeID.
func entryIDs(ids []workloadapi.Identity, spiffeID string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if spiffeID == "" || id.Entry.GetSpiffeId() == spiffeID {
			out = append(out, id.Entry.GetId())
		}
	}
	return out
}
