package agentapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/store"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// MaxGrantEntryIDs bounds the entry ids of one ReleaseGrant, WaitGrant or
// ListGrants call: the identities one workload holds.
const MaxGrantEntryIDs = 1000

// maxGrantIDBytes bounds a grant id the agent names.
const maxGrantIDBytes = 256

// Grants decides and manages grants; *grant.Service satisfies it.
type Grants interface {
	Request(ctx context.Context, req grant.Request) (grant.Result, error)
	Wait(ctx context.Context, id string) (grant.Result, error)
	Get(ctx context.Context, id string) (*typesv1.Grant, error)
	Release(ctx context.Context, entryIDs []string, id, by string) (*typesv1.Grant, error)
	List(ctx context.Context, req store.ListGrantsRequest) ([]*typesv1.Grant, string, error)
}

// grantService implements agentv1.AgentGrantServiceServer behind the same
// authentication as AgentService: the calling node is in the context.
type grantService struct {
	agentv1.UnimplementedAgentGrantServiceServer
	s      *Service
	grants Grants
}

var _ agentv1.AgentGrantServiceServer = (*grantService)(nil)

// RequestGrant decides a workload's grant request for an entry authorised
// for the calling node and streams its status: the decision, or
// PENDING_APPROVAL and then the outcome once the grant is decided.
func (h *grantService) RequestGrant(req *agentv1.AgentGrantRequest, stream agentv1.AgentGrantService_RequestGrantServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	if req.GetRequest() == nil {
		return status.Error(codes.InvalidArgument, "request: required")
	}
	az, _, err := h.s.loadAuthz(ctx, c.node)
	if err != nil {
		return h.s.internal(ctx, "load node aliases", err)
	}
	e, _, st := h.s.authorisedEntry(ctx, az, req.GetEntryId(), h.s.clock.Now())
	if st != nil {
		return st.Err()
	}
	res, err := h.grants.Request(ctx, grant.Request{Entry: e, Node: c.node, Grant: req.GetRequest()})
	if err != nil {
		return h.grantError(ctx, "decide grant", err)
	}
	if err := stream.Send(grantStatus(res)); err != nil {
		return err
	}
	if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING {
		return nil
	}
	return h.awaitDecision(stream, res.Grant.GetId())
}

// WaitGrant resumes the wait for a grant's decision after a RequestGrant
// stream broke: the grant must belong to one of entry_ids, each under the
// calling node. It streams the grant's status from now on as RequestGrant
// does: PENDING_APPROVAL while it waits, then the outcome (GRANTED with a
// token signed now, or DENIED); a grant decided already gets its outcome
// at once.
func (h *grantService) WaitGrant(req *agentv1.AgentWaitGrantRequest, stream agentv1.AgentGrantService_WaitGrantServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	switch id := req.GetGrantId(); {
	case id == "":
		return status.Error(codes.InvalidArgument, "grant_id: required")
	case len(id) > maxGrantIDBytes:
		return status.Errorf(codes.InvalidArgument, "grant_id: is %d bytes, at most %d allowed", len(id), maxGrantIDBytes)
	}
	if err := h.entriesUnderNode(ctx, c, req.GetEntryIds()); err != nil {
		return err
	}
	g, err := h.grants.Get(ctx, req.GetGrantId())
	if err != nil {
		return h.grantError(ctx, "read grant", err)
	}
	if !slices.Contains(req.GetEntryIds(), g.GetEntryId()) {
		return status.Error(codes.NotFound, "grant not found")
	}
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_PENDING {
		if err := stream.Send(grantStatus(grant.Result{Grant: g})); err != nil {
			return err
		}
	}
	return h.awaitDecision(stream, g.GetId())
}

// awaitDecision keeps the stream open while the grant waits for approval
// and sends the outcome; the server stopping ends the wait with
// Unavailable (the grant stays pending: the agent resumes with WaitGrant,
// on this server once it is back or on another).
func (h *grantService) awaitDecision(stream grpc.ServerStreamingServer[grantv1.GrantStatus], id string) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := h.grants.Wait(ctx, id)
	if err != nil {
		if stream.Context().Err() == nil && ctx.Err() != nil {
			return status.Error(codes.Unavailable, "nhid-server is shutting down; request the grant again")
		}
		return h.grantError(stream.Context(), "wait for approval", err)
	}
	return stream.Send(grantStatus(res))
}

// grantStatus is what the workload sees of a grant.
func grantStatus(res grant.Result) *grantv1.GrantStatus {
	g := res.Grant
	out := &grantv1.GrantStatus{GrantId: g.GetId(), Rule: g.GetRule(), Reason: g.GetDecisionReason()}
	switch g.GetStatus() {
	case typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
		out.State = grantv1.GrantState_GRANT_STATE_GRANTED
		out.Token, out.Scopes, out.ExpiresAt = res.Token, g.GetScopes(), g.GetExpiresAt()
	case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		// While it waits, expires_at is the approval deadline (the expiry
		// for grants stored before approvals had deadlines).
		out.State, out.ExpiresAt = grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL, g.GetApprovalDeadline()
		if out.ExpiresAt == 0 {
			out.ExpiresAt = g.GetExpiresAt()
		}
	case typesv1.GrantStatus_GRANT_STATUS_DENIED:
		out.State = grantv1.GrantState_GRANT_STATE_DENIED
	default:
		// Revoked, released or expired before it was granted.
		out.State = grantv1.GrantState_GRANT_STATE_DENIED
		out.Reason = fmt.Sprintf("grant %s before it was granted", statusWord(g.GetStatus()))
		if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_REVOKED && g.GetDecisionReason() != "" {
			out.Reason += ": " + g.GetDecisionReason()
		}
	}
	return out
}

func statusWord(st typesv1.GrantStatus) string {
	switch st {
	case typesv1.GrantStatus_GRANT_STATUS_REVOKED:
		return "revoked"
	case typesv1.GrantStatus_GRANT_STATUS_RELEASED:
		return "released"
	}
	return "expired"
}

// ReleaseGrant ends one of the caller's grants early.
func (h *grantService) ReleaseGrant(ctx context.Context, req *agentv1.AgentReleaseGrantRequest) (*agentv1.AgentReleaseGrantResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetGrantId() == "" {
		return nil, status.Error(codes.InvalidArgument, "grant_id: required")
	}
	if err := h.entriesUnderNode(ctx, c, req.GetEntryIds()); err != nil {
		return nil, err
	}
	if _, err := h.grants.Release(ctx, req.GetEntryIds(), req.GetGrantId(), c.id.String()); err != nil {
		return nil, h.grantError(ctx, "release grant", err)
	}
	return &agentv1.AgentReleaseGrantResponse{}, nil
}

// ListGrants returns the ACTIVE grants of the caller's entries.
func (h *grantService) ListGrants(ctx context.Context, req *agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.entriesUnderNode(ctx, c, req.GetEntryIds()); err != nil {
		return nil, err
	}
	q := store.ListGrantsRequest{EntryIDs: req.GetEntryIds(), Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, PageSize: 500}
	resp := &agentv1.AgentListGrantsResponse{}
	for {
		page, next, err := h.grants.List(ctx, q)
		if err != nil {
			return nil, h.grantError(ctx, "list grants", err)
		}
		resp.Grants = append(resp.Grants, page...)
		if next == "" {
			return resp, nil
		}
		q.PageToken = next
	}
}

// entriesUnderNode checks that every id names an entry that hangs under
// the calling node (expired ones included: their grants can still be
// listed and released).
func (h *grantService) entriesUnderNode(ctx context.Context, c *caller, ids []string) error {
	switch n := len(ids); {
	case n == 0:
		return status.Error(codes.InvalidArgument, "entry_ids: at least one entry id is required")
	case n > MaxGrantEntryIDs:
		return status.Errorf(codes.InvalidArgument, "entry_ids: %d ids, at most %d allowed", n, MaxGrantEntryIDs)
	}
	az, _, err := h.s.loadAuthz(ctx, c.node)
	if err != nil {
		return h.s.internal(ctx, "load node aliases", err)
	}
	for i, id := range ids {
		if id == "" {
			return status.Errorf(codes.InvalidArgument, "entry_ids[%d]: empty", i)
		}
		e, err := h.s.store.GetEntry(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return status.Error(codes.NotFound, entryMsg(id, "not found"))
		case err != nil:
			return h.s.internal(ctx, "load entry", err)
		case !az.underNode(e):
			return status.Error(codes.PermissionDenied, entryMsg(id, "is not authorised for this node"))
		}
	}
	return nil
}

// grantError turns a grant failure into the status the agent sees.
func (h *grantService) grantError(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, grantreq.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, grant.ErrNoPolicy):
		return status.Error(codes.FailedPrecondition, "no grant policy is configured on nhid-server")
	case errors.Is(err, grant.ErrEnded):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "grant not found")
	}
	return h.s.internal(ctx, op, err)
}
