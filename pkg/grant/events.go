package grant

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ReporterServer is the reporter of the reputation events the server
// itself observes, and the ended_by of grants it revokes.
const ReporterServer = "server"

// observeTimeout bounds one reputation update. It runs detached from the
// request: a caller hanging up must not spare itself a penalty.
const observeTimeout = 5 * time.Second

// failedStanding is what a subject's standing is taken to be when the
// tracker cannot say: the lowest score, restricted. A store failure may
// make a decision narrower (a person has to approve), never wider.
var failedStanding = reputation.Standing{Score: 0, Restricted: true}

// standing is the subject's reputation now: the baseline when reputation
// is not tracked, failedStanding when the tracker fails.
func (s *Service) standing(ctx context.Context, spiffeID string) reputation.Standing {
	if s.reputation == nil {
		return reputation.Standing{Score: BaselineReputation}
	}
	st, err := s.reputation.Standing(ctx, spiffeID)
	if err != nil {
		s.metrics.reputationFailures.WithLabelValues("standing").Inc()
		if ctx.Err() == nil {
			telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelWarn,
				"reputation unavailable: deciding as if the subject were restricted",
				slog.String(telemetry.SPIFFEID, spiffeID), slog.String(telemetry.Error, err.Error()))
		}
		return failedStanding
	}
	return st
}

// observe tells the reputation tracker what g's subject did. A failure is
// logged and counted; it never fails the caller.
func (s *Service) observe(ctx context.Context, g *typesv1.Grant, kind reputation.Kind, reason, reporter string) {
	if s.reputation == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), observeTimeout)
	defer cancel()
	_, err := s.reputation.Observe(ctx, reputation.Event{
		SPIFFEID: g.GetSpiffeId(), Owner: g.GetOwner(), Kind: kind,
		Reason: reason, Reporter: reporter, GrantID: g.GetId(),
	})
	if err != nil {
		s.metrics.reputationFailures.WithLabelValues("observe").Inc()
		telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelWarn, "reputation event not recorded",
			slog.String(telemetry.GrantID, g.GetId()), slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
			slog.String(telemetry.Event, string(kind)), slog.String(telemetry.Error, err.Error()))
	}
}

// decided hands a new decision on: a record to the audit log, a denial to
// the subject's reputation, a wait for approval to the owner.
func (s *Service) decided(ctx context.Context, g *typesv1.Grant, dec policy.Decision) {
	s.audit.Record(context.WithoutCancel(ctx), decisionEvent(g))
	switch g.GetStatus() {
	case typesv1.GrantStatus_GRANT_STATUS_DENIED:
		kind := reputation.KindGrantDenied
		if dec.RateLimited {
			kind = reputation.KindRateLimited
		}
		s.observe(ctx, g, kind, g.GetDecisionReason(), ReporterServer)
	case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		s.notifier.Notify(context.WithoutCancel(ctx), approvalRequested(g))
	}
}

// ended records the end of a grant (release, revocation, expiry) by actor.
func (s *Service) ended(ctx context.Context, g *typesv1.Grant, actor string) {
	details := grantDetails(g)
	if g.GetEndedBy() != "" {
		details["ended_by"] = g.GetEndedBy()
	}
	s.audit.Record(context.WithoutCancel(ctx), audit.Event{
		Actor: actor, OnBehalfOf: g.GetOwner(), Action: audit.ActionGrantEnd, Target: g.GetId(),
		Outcome: audit.OutcomeSuccess, Reason: g.GetDecisionReason(), Details: details,
	})
}

// decisionEvent is the audit record of a decision. It never holds the
// token.
func decisionEvent(g *typesv1.Grant) audit.Event {
	outcome := audit.OutcomeSuccess
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_DENIED {
		outcome = audit.OutcomeDenied
	}
	return audit.Event{
		Actor: g.GetSpiffeId(), OnBehalfOf: g.GetOwner(), Action: audit.ActionGrantDecide, Target: g.GetId(),
		Outcome: outcome, Reason: g.GetDecisionReason(), Details: grantDetails(g),
	}
}

// grantDetails are the particulars of g that audit records and
// notifications carry: what was asked, what was decided, never a token.
func grantDetails(g *typesv1.Grant) map[string]any {
	d := map[string]any{
		"status":           statusName(g.GetStatus()),
		"spiffe_id":        g.GetSpiffeId(),
		"entry_id":         g.GetEntryId(),
		"node":             g.GetNode(),
		"purpose":          g.GetPurpose(),
		"requested_scopes": slices.Clone(g.GetRequestedScopes()),
		"scopes":           slices.Clone(g.GetScopes()),
		"resource":         g.GetResource(),
		"action":           g.GetAction(),
		"reason":           g.GetReason(),
		"rule":             g.GetRule(),
		"reputation":       g.GetReputation(),
	}
	if v := g.GetAuthorizationDetails(); v != "" {
		d["authorization_details"] = v
	}
	if g.GetExpiresAt() != 0 {
		d["expires_at"] = g.GetExpiresAt()
	}
	if g.GetApprovalsRequired() > 0 {
		d["approvals_required"] = g.GetApprovalsRequired()
		d["approvals"] = approvalsGiven(g)
		d["approval_deadline"] = g.GetApprovalDeadline()
		d["ttl"] = g.GetTtl()
	}
	if g.GetCritical() {
		d["critical"] = true
	}
	if g.GetRestricted() {
		d["restricted"] = true
	}
	return d
}

// approvalRequested is the owner's notification of a grant waiting for
// approval.
func approvalRequested(g *typesv1.Grant) notify.Notification {
	data := grantDetails(g)
	data["grant_id"] = g.GetId()
	data["owner"] = g.GetOwner()
	data["decision_reason"] = g.GetDecisionReason()
	data["created_at"] = g.GetCreatedAt()
	return notify.Notification{Type: notify.TypeApprovalRequested, Owner: g.GetOwner(), Subject: g.GetSpiffeId(), Data: data}
}
