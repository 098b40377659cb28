package grants

import (
	"errors"
	"github.com/nhid/nhid/pkg/grantreq"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Request validates the caller's grant request, forwards it for the
// caller's entry, and relays the server's answers message by message, so
// that a caller can wait for a human's approval. The caller leaving
// cancels the request upstream.
func (h *Handler) Request(req *grantv1.GrantRequest, stream grpc.ServerStreamingServer[grantv1.GrantStatus]) (err error) {
	c := h.begin(stream.Context(), methodRequest)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return err
	}
	// Validated before spiffe_id is used: it is bounded there.
	if err := grantreq.ValidateRequest(req); err != nil {
		return &apiError{code: codes.InvalidArgument, msg: err.Error()}
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
	return c.relay(up, stream)
}

// relay forwards the server's status messages until the decision.
func (c *call) relay(up grpc.ServerStreamingClient[grantv1.GrantStatus], down grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
	pending, grantID := false, ""
	defer func() {
		if pending {
			c.h.metrics.pending.Dec()
		}
	}()
	for {
		msg, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return &apiError{code: codes.Unavailable, msg: "nhid-server ended the request without a decision; retry"}
		}
		if err != nil {
			return &upstreamError{err: err}
		}
		if grantID == "" && msg.GetGrantId() != "" {
			grantID = msg.GetGrantId()
			c.log = c.log.With(telemetry.GrantID, grantID)
		}
		if err := down.Send(msg); err != nil {
			return err
		}
		switch msg.GetState() {
		case grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL:
			if !pending {
				pending = true
				c.h.metrics.pending.Inc()
				c.log.Info("grant waits for approval", telemetry.Reason, msg.GetReason())
			}
		case grantv1.GrantState_GRANT_STATE_GRANTED, grantv1.GrantState_GRANT_STATE_DENIED:
			c.decided(msg, pending)
			c.drain(up)
			return nil
		}
	}
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
		return nil, &apiError{code: codes.PermissionDenied, msg: "spiffe_id: " + spiffeID + " is not one of the caller's identities"}
	case len(matched) > 1:
		// Entries with one SPIFFE ID may differ in purpose, owner and
		// scope ceiling: the operator has to make the registration
		// unambiguous, the workload cannot.
		return nil, &apiError{code: codes.FailedPrecondition,
			msg: "several registration entries give the caller " + matched[0].GetSpiffeId() + "; a grant needs exactly one"}
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
