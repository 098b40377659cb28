package grant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of what an approver gives.
const (
	MaxApprovalReasonBytes = 1024
	maxApproverBytes       = 256
)

// Errors of Approve and Deny, besides grantreq.ErrInvalidRequest and
// store.ErrNotFound.
var (
	// ErrNotPending: the grant is not waiting for approval (any more).
	ErrNotPending = errors.New("grant is not waiting for approval")
	// ErrSelfApproval: the approver is the grant's subject, or runs as an
	// agent of the subject's owner (docs/approvals.md).
	ErrSelfApproval = errors.New("nobody decides their own request")
	// ErrAlreadyApproved: the approver has approved the grant already; a
	// grant that needs two approvals needs two people.
	ErrAlreadyApproved = errors.New("approver has already approved this grant")
)

// Principal is a person (or a tool acting for one) deciding on a grant,
// as the admin API authenticated them: by the kernel's peer credentials
// on the admin socket, or by an X.509-SVID on the mTLS listener.
type Principal struct {
	// Name is how the decision is recorded, e.g. "unix:alice(1000)" or
	// "spiffe://example.org/approvers/alice". Approvers are distinct when
	// their names are. Required.
	Name string
	// SPIFFEID is the approver's SPIFFE ID when it called over mTLS; the
	// Unix fields are then unused.
	SPIFFEID string
	// UID and User are the approver's Unix identity, for the rule that
	// nobody approves their own request; User may be empty when the uid
	// has no name.
	UID  uint32
	User string
}

// Approve records by's approval of a PENDING grant. Once the grant has as
// many approvals from distinct people as it requires, it becomes ACTIVE
// for its ttl from now, and the waiting request gets its token. reason is
// optional. Errors: ErrNotPending, ErrSelfApproval, ErrAlreadyApproved,
// grantreq.ErrInvalidRequest, store.ErrNotFound, or a store failure.
func (s *Service) Approve(ctx context.Context, id string, by Principal, reason string) (*typesv1.Grant, error) {
	return s.decideApproval(ctx, id, by, reason, true)
}

// Deny rejects a PENDING grant at once: it becomes DENIED with by's
// reason (required), which the waiting workload receives, and the
// rejection costs the subject reputation. The errors are Approve's but
// ErrAlreadyApproved: someone who approved may still reject.
func (s *Service) Deny(ctx context.Context, id string, by Principal, reason string) (*typesv1.Grant, error) {
	return s.decideApproval(ctx, id, by, reason, false)
}

func (s *Service) decideApproval(ctx context.Context, id string, by Principal, reason string, approve bool) (*typesv1.Grant, error) {
	minReason := 0
	if !approve {
		minReason = 1
	}
	if err := errors.Join(
		grantreq.CheckText("approver", by.Name, 1, maxApproverBytes),
		grantreq.CheckText("reason", reason, minReason, MaxApprovalReasonBytes),
	); err != nil {
		return nil, err
	}
	g, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING {
		return nil, notPending(g)
	}
	if err := s.checkApprover(ctx, g, by); err != nil {
		if errors.Is(err, ErrSelfApproval) {
			s.metrics.approvals.WithLabelValues("refused").Inc()
			telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelWarn, "approval refused",
				slog.String(telemetry.GrantID, id), slog.String("approver", by.Name), slog.String(telemetry.Reason, err.Error()))
		}
		return nil, err
	}
	// Who among the earlier approvers is by under another name is read
	// outside the transaction (fn may run again); an approval recorded
	// meanwhile makes the update start over with a fresh look.
	for attempt := 0; ; attempt++ {
		same, err := s.sameAs(ctx, g, by)
		if err != nil {
			return nil, err
		}
		seen := len(g.GetApprovals())
		now := s.clock.Now()
		g, err = s.store.UpdateGrant(ctx, id, func(g *typesv1.Grant) error {
			if len(g.GetApprovals()) != seen {
				return errApprovalsMoved
			}
			return record(g, by, same, reason, approve, now)
		})
		if errors.Is(err, errApprovalsMoved) && attempt < 3 {
			if g, err = s.Get(ctx, id); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	s.waiters.wake(id)
	s.approvalDecided(ctx, g, by, reason, approve)
	return g, nil
}

// notPending is the error for deciding on g, which is not PENDING.
func notPending(g *typesv1.Grant) error {
	return fmt.Errorf("grant %q is %s: %w", g.GetId(), statusName(g.GetStatus()), ErrNotPending)
}

// errApprovalsMoved: another approval was recorded while by's was being
// checked.
var errApprovalsMoved = errors.New("another approval was recorded meanwhile; try again")

// record adds by's decision to the stored grant g, activating or denying
// it when that decides it. same names the approvers who are by under
// another name (sameAs).
func record(g *typesv1.Grant, by Principal, same map[string]bool, reason string, approve bool, now time.Time) error {
	if g.Status != typesv1.GrantStatus_GRANT_STATUS_PENDING || expired(g, now) {
		cp := proto.Clone(g).(*typesv1.Grant)
		expire(cp, now)
		return notPending(cp)
	}
	if approve {
		for _, a := range g.GetApprovals() {
			switch {
			case !a.GetApproved() || !same[a.GetApprover()]:
			case a.GetApprover() == by.Name:
				return fmt.Errorf("grant %q: %s: %w", g.GetId(), by.Name, ErrAlreadyApproved)
			default:
				return fmt.Errorf("grant %q: %s is the same person as %s, who approved (shared owner or uid): %w",
					g.GetId(), by.Name, a.GetApprover(), ErrAlreadyApproved)
			}
		}
	}
	g.Approvals = append(g.Approvals, &typesv1.Approval{Approver: by.Name, Approved: approve, Reason: reason, At: now.Unix()})
	if !approve {
		g.Status, g.DecisionReason, g.Scopes = typesv1.GrantStatus_GRANT_STATUS_DENIED, reason, nil
		g.DecidedAt, g.EndedAt, g.EndedBy = now.Unix(), now.Unix(), by.Name
		return nil
	}
	if int32(len(approvers(g))) < max(g.GetApprovalsRequired(), 1) {
		return nil
	}
	g.Status, g.DecidedAt = typesv1.GrantStatus_GRANT_STATUS_ACTIVE, now.Unix()
	g.ExpiresAt = now.Add(lifetime(g, now)).Unix()
	g.DecisionReason = "approved by " + strings.Join(approvers(g), " and ")
	return nil
}

// lifetime is how long g lives once approved at now: its ttl, or for a
// grant stored before approvals existed, what is left of its expiry.
func lifetime(g *typesv1.Grant, now time.Time) time.Duration {
	if g.GetTtl() > 0 {
		return time.Duration(g.GetTtl()) * time.Second
	}
	return time.Unix(g.GetExpiresAt(), 0).Sub(now)
}

// approvers names who approved g, oldest first, each once.
func approvers(g *typesv1.Grant) []string {
	var out []string
	for _, a := range g.GetApprovals() {
		if a.GetApproved() && !slices.Contains(out, a.GetApprover()) {
			out = append(out, a.GetApprover())
		}
	}
	return out
}

// approvalsGiven counts g's distinct approvals.
func approvalsGiven(g *typesv1.Grant) int { return len(approvers(g)) }

// approvalDecided logs and records by's decision on g, and charges a
// rejection to the subject's reputation.
func (s *Service) approvalDecided(ctx context.Context, g *typesv1.Grant, by Principal, reason string, approve bool) {
	outcome, auditOutcome, msg := "approved", audit.OutcomeSuccess, "grant approval recorded"
	if !approve {
		outcome, auditOutcome, msg = "denied", audit.OutcomeDenied, "grant denied by an approver"
	}
	s.metrics.approvals.WithLabelValues(outcome).Inc()
	telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelInfo, msg,
		slog.String(telemetry.GrantID, g.GetId()), slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
		slog.String("approver", by.Name), slog.String(telemetry.Status, statusName(g.GetStatus())),
		slog.Int("approvals", approvalsGiven(g)), slog.Int("approvals_required", int(g.GetApprovalsRequired())),
		slog.String(telemetry.Reason, reason))
	details := grantDetails(g)
	details["approved"] = approve
	details["approver_uid"] = by.UID
	s.audit.Record(context.WithoutCancel(ctx), audit.Event{
		Actor: by.Name, OnBehalfOf: g.GetOwner(), Action: audit.ActionApprovalDecide, Target: g.GetId(),
		Outcome: auditOutcome, Reason: reason, Details: details,
	})
	if !approve {
		s.observe(ctx, g, reputation.KindApprovalRejected, reason, by.Name)
	}
}

// approverSelectors are the unix selectors an entry would use to select
// processes of by.
func approverSelectors(by Principal) []string {
	sels := []string{"unix:uid:" + strconv.FormatUint(uint64(by.UID), 10)}
	if by.User != "" {
		sels = append(sels, "unix:user:"+by.User)
	}
	return sels
}
