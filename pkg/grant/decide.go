package grant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Rule names of the decisions taken before policy runs.
const (
	RuleScopeCeiling = "scope_ceiling"
)

// Reasons the service gives itself.
const (
	reasonOutsideCeiling = "requested scopes are outside the entry's scope ceiling"
	reasonNarrowedAway   = "policy allowed none of the requested scopes within the entry's scope ceiling"
	reasonTimedOut       = "approval timed out"
	reasonRestricted     = "the subject's reputation is below the restrict threshold: every grant needs a person's approval"
)

// Request is one grant request as the agent API hands it over, after it
// has authorised the calling node for the entry.
type Request struct {
	// Entry is the registration entry whose SVID the workload holds.
	Entry *typesv1.Entry
	// Node is the record of the agent the request came through.
	Node *typesv1.Node
	// Grant is what the workload asked for.
	Grant *grantv1.GrantRequest
}

// Result is a decided grant: the stored record and, when it is ACTIVE, its
// Txn-Token (a bearer credential: never log it).
type Result struct {
	Grant *typesv1.Grant
	Token string
}

// Request validates req, lets policy decide and stores the grant: ACTIVE
// with a Txn-Token on allow, DENIED with the reason on deny, PENDING when
// policy requires approval or the subject's reputation is restricted (see
// docs/approvals.md). Errors: grantreq.ErrInvalidRequest (nothing stored),
// ErrNoPolicy (nothing stored), or a failure to store or sign.
func (s *Service) Request(ctx context.Context, req Request) (Result, error) {
	if req.Entry == nil || req.Node == nil {
		return Result{}, errors.New("grant request: entry and node are required")
	}
	details, err := s.limits.Validate(req.Grant, s.maxTTL)
	if err != nil {
		return Result{}, err
	}
	if s.policy == nil {
		return Result{}, ErrNoPolicy
	}
	start := time.Now()
	now := s.clock.Now()
	g := s.newGrant(req, now)
	res, dec, err := s.decide(ctx, req, g, details, now)
	if err != nil {
		return Result{}, err
	}
	s.metrics.observe(res.Grant.GetStatus(), time.Since(start))
	s.logDecision(ctx, res.Grant, dec)
	s.decided(ctx, res.Grant, dec)
	return res, nil
}

// newGrant is the record of req before the decision.
func (s *Service) newGrant(req Request, now time.Time) *typesv1.Grant {
	r := req.Grant
	return &typesv1.Grant{
		Id:                   uuid.Must(uuid.NewV7()).String(),
		SpiffeId:             req.Entry.GetSpiffeId(),
		EntryId:              req.Entry.GetId(),
		Node:                 req.Node.GetSpiffeId(),
		Purpose:              req.Entry.GetPurpose(),
		Owner:                req.Entry.GetOwner(),
		RequestedScopes:      slices.Clone(r.GetScopes()),
		Resource:             r.GetResource(),
		Action:               r.GetAction(),
		Reason:               r.GetReason(),
		AuthorizationDetails: r.GetAuthorizationDetails(),
		RequestedTtl:         r.GetTtl(),
		CreatedAt:            now.Unix(),
		DecidedAt:            now.Unix(),
	}
}

// decide fills g from the decision and stores it; dec is what policy said
// (the zero Decision when the scope ceiling decided first).
func (s *Service) decide(ctx context.Context, req Request, g *typesv1.Grant, details []any, now time.Time) (Result, policy.Decision, error) {
	st := s.standing(ctx, g.SpiffeId)
	g.Reputation = int32(st.Score)
	scopes := intersect(g.RequestedScopes, req.Entry.GetScopeCeiling())
	if len(scopes) == 0 {
		deny(g, RuleScopeCeiling, reasonOutsideCeiling, now)
		res, err := s.save(ctx, g, "")
		return res, policy.Decision{}, err
	}
	in, err := s.input(ctx, req, details, st.Score, now)
	if err != nil {
		return Result{}, policy.Decision{}, err
	}
	dec := s.policy.Decide(ctx, in)
	res, err := s.apply(ctx, g, dec, st, scopes, now)
	return res, dec, err
}

// apply turns the decision into the stored grant. scopes are the requested
// scopes within the entry's ceiling; st is the subject's standing, which
// turns an allow into a wait for approval when it is restricted.
func (s *Service) apply(ctx context.Context, g *typesv1.Grant, dec policy.Decision, st reputation.Standing, scopes []string, now time.Time) (Result, error) {
	g.Rule, g.DecisionReason = dec.Rule, dec.Reason
	ttl := min(time.Duration(g.RequestedTtl)*time.Second, s.maxTTL)
	switch dec.Effect {
	case policy.Allow:
		if dec.MaxTTL > 0 {
			ttl = min(ttl, dec.MaxTTL)
		}
		if dec.Scopes != nil {
			scopes = intersect(scopes, dec.Scopes)
		}
		if len(scopes) == 0 {
			deny(g, dec.Rule, reasonNarrowedAway, now)
			return s.save(ctx, g, "")
		}
		g.Scopes = scopes
		if !st.Restricted {
			return s.allow(ctx, g, ttl)
		}
		s.pend(g, ttl, 1, now)
		g.Restricted, g.DecisionReason = true, reasonRestricted
	case policy.RequireApproval:
		g.Scopes = scopes
		required := int32(1)
		if dec.Critical {
			required = 2
		}
		s.pend(g, ttl, required, now)
		g.Critical, g.Restricted = dec.Critical, st.Restricted
	default:
		deny(g, dec.Rule, dec.Reason, now)
	}
	return s.save(ctx, g, "")
}

// pend makes g wait for required approvals until the approval deadline.
// Its lifetime, ttl, starts when it is approved, so it has no expiry yet.
func (s *Service) pend(g *typesv1.Grant, ttl time.Duration, required int32, now time.Time) {
	g.Status = typesv1.GrantStatus_GRANT_STATUS_PENDING
	g.ApprovalsRequired = required
	g.ApprovalDeadline = now.Add(s.approvalTimeout).Unix()
	g.Ttl = int32(ttl / time.Second)
	g.ExpiresAt = 0
}

// deny makes g a denial that ended when it was decided.
func deny(g *typesv1.Grant, rule, reason string, now time.Time) {
	g.Status = typesv1.GrantStatus_GRANT_STATUS_DENIED
	g.Rule, g.DecisionReason = rule, reason
	g.Scopes = nil
	g.EndedAt = now.Unix()
}

// allow signs g's Txn-Token, then stores g ACTIVE: no token leaves the
// server without its grant record, which introspection reads.
func (s *Service) allow(ctx context.Context, g *typesv1.Grant, ttl time.Duration) (Result, error) {
	g.Status = typesv1.GrantStatus_GRANT_STATUS_ACTIVE
	token, exp, err := s.sign(ctx, g, ttl)
	if err != nil {
		return Result{}, err
	}
	g.ExpiresAt = exp.Unix()
	return s.save(ctx, g, token)
}

// save stores the decided grant and pairs it with its token.
func (s *Service) save(ctx context.Context, g *typesv1.Grant, token string) (Result, error) {
	stored, err := s.store.CreateGrant(ctx, g)
	if err != nil {
		return Result{}, fmt.Errorf("store grant: %w", err)
	}
	return Result{Grant: stored, Token: token}, nil
}

// input gathers what policy sees: the subject with its reputation score,
// the request, the time and the subject's usage counters.
func (s *Service) input(ctx context.Context, req Request, details []any, score int, now time.Time) (policy.Input, error) {
	usage, err := s.usage(ctx, req.Entry.GetSpiffeId(), now)
	if err != nil {
		return policy.Input{}, err
	}
	r := req.Grant
	return policy.Input{
		Subject: policy.Subject{
			SPIFFEID:      req.Entry.GetSpiffeId(),
			EntryID:       req.Entry.GetId(),
			Purpose:       req.Entry.GetPurpose(),
			Owner:         req.Entry.GetOwner(),
			Selectors:     slices.Clone(req.Entry.GetSelectors()),
			NodeSelectors: slices.Clone(req.Node.GetSelectors()),
			Reputation:    score,
		},
		Request: policy.Request{
			Scopes:               slices.Clone(r.GetScopes()),
			Resource:             r.GetResource(),
			Action:               r.GetAction(),
			Reason:               r.GetReason(),
			TTL:                  time.Duration(r.GetTtl()) * time.Second,
			AuthorizationDetails: details,
		},
		Now:   now,
		Usage: usage,
	}, nil
}

// usage counts the subject's grants of the last minute, hour and day, and
// its ACTIVE grants that have not expired.
func (s *Service) usage(ctx context.Context, spiffeID string, now time.Time) (policy.Usage, error) {
	u, err := s.store.GrantUsage(ctx, spiffeID, now)
	if err != nil {
		return policy.Usage{}, fmt.Errorf("count grants: %w", err)
	}
	return policy.Usage{LastMinute: u.LastMinute, LastHour: u.LastHour, LastDay: u.LastDay, Active: u.Active}, nil
}

// intersect returns the scopes of a that are also in b, in a's order.
func intersect(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// logDecision logs a decision once, with its identifiers; never the token.
func (s *Service) logDecision(ctx context.Context, g *typesv1.Grant, dec policy.Decision) {
	attrs := []slog.Attr{
		slog.String(telemetry.GrantID, g.GetId()),
		slog.String(telemetry.Effect, effectOf(g.GetStatus())),
		slog.String(telemetry.Rule, g.GetRule()),
		slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
		slog.String(telemetry.EntryID, g.GetEntryId()),
		slog.String(telemetry.NodeID, g.GetNode()),
		slog.Any(telemetry.Scopes, g.GetScopes()),
		slog.String(telemetry.Reason, g.GetDecisionReason()),
	}
	if g.GetExpiresAt() != 0 {
		attrs = append(attrs, slog.Int64(telemetry.ExpiresAt, g.GetExpiresAt()))
	}
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_PENDING {
		attrs = append(attrs, slog.Int("approvals_required", int(g.GetApprovalsRequired())),
			slog.Int64("approval_deadline", g.GetApprovalDeadline()))
	}
	if dec.Critical {
		attrs = append(attrs, slog.Bool("critical", true))
	}
	if g.GetRestricted() {
		attrs = append(attrs, slog.Bool("restricted", true), slog.Int("reputation", int(g.GetReputation())))
	}
	telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelInfo, "grant decided", attrs...)
}

// effectOf names the effect a stored decision had.
func effectOf(st typesv1.GrantStatus) string {
	switch st {
	case typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
		return policy.Allow.String()
	case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		return policy.RequireApproval.String()
	}
	return policy.Deny.String()
}
