package grant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// MaxRevokeReasonBytes bounds the reason an operator gives for a revocation.
const MaxRevokeReasonBytes = 1024

// sweepPage is how many grants one sweep reads at a time.
const sweepPage = 500

// live reports whether st is a status a grant can still leave on its own.
func live(st typesv1.GrantStatus) bool {
	return st == typesv1.GrantStatus_GRANT_STATUS_ACTIVE || st == typesv1.GrantStatus_GRANT_STATUS_PENDING
}

// deadline is when a live grant ends on its own (unix seconds): a PENDING
// grant at its approval deadline, an ACTIVE one at its expiry; 0 if never.
// PENDING grants stored before approvals existed have no approval
// deadline and wait until their expires_at.
func deadline(g *typesv1.Grant) int64 {
	switch g.GetStatus() {
	case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		if d := g.GetApprovalDeadline(); d != 0 {
			return d
		}
		return g.GetExpiresAt()
	case typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
		return g.GetExpiresAt()
	}
	return 0
}

// expired reports whether a live grant is past its deadline at now.
func expired(g *typesv1.Grant, now time.Time) bool {
	d := deadline(g)
	return d != 0 && now.Unix() >= d
}

// expire moves a live grant past its deadline to where it ends: an ACTIVE
// grant to EXPIRED, a PENDING one to DENIED ("approval timed out"). It
// reports whether it changed g.
func expire(g *typesv1.Grant, now time.Time) bool {
	if !expired(g, now) {
		return false
	}
	g.EndedAt = deadline(g)
	if g.Status == typesv1.GrantStatus_GRANT_STATUS_PENDING {
		g.Status, g.DecisionReason = typesv1.GrantStatus_GRANT_STATUS_DENIED, reasonTimedOut
		g.Scopes = nil
	} else {
		g.Status = typesv1.GrantStatus_GRANT_STATUS_EXPIRED
	}
	return true
}

// Get returns a grant, recording its expiry first if it is due.
func (s *Service) Get(ctx context.Context, id string) (*typesv1.Grant, error) {
	g, err := s.store.GetGrant(ctx, id)
	if err != nil {
		return nil, err
	}
	if !expired(g, s.clock.Now()) {
		return g, nil
	}
	return s.expireStored(ctx, id)
}

// expireStored records the expiry of a grant that is due.
func (s *Service) expireStored(ctx context.Context, id string) (*typesv1.Grant, error) {
	now := s.clock.Now()
	g, err := s.store.UpdateGrant(ctx, id, func(g *typesv1.Grant) error {
		if !expire(g, now) {
			return errUnchanged
		}
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return s.store.GetGrant(ctx, id)
	}
	if err != nil {
		return nil, fmt.Errorf("expire grant %s: %w", id, err)
	}
	s.ended(ctx, g, ReporterServer)
	return g, nil
}

// errUnchanged aborts an update that turned out to have nothing to do.
var errUnchanged = errors.New("grant unchanged")

// List pages through grants newest first, as the store does. Grants past
// their expiry are shown EXPIRED (or DENIED, for a timed-out approval)
// before the sweep records it, and a filter on ACTIVE or PENDING leaves
// them out, so a page may come back shorter than asked.
func (s *Service) List(ctx context.Context, req store.ListGrantsRequest) ([]*typesv1.Grant, string, error) {
	grants, next, err := s.store.ListGrants(ctx, req)
	if err != nil {
		return nil, "", err
	}
	now := s.clock.Now()
	out := grants[:0]
	for _, g := range grants {
		expire(g, now)
		if req.Status == typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED || g.Status == req.Status {
			out = append(out, g)
		}
	}
	return out, next, nil
}

// Release ends a grant early on behalf of its holder: the grant must have
// been issued for one of entryIDs (else store.ErrNotFound, as for an
// unknown grant). A PENDING or ACTIVE grant becomes RELEASED; releasing a
// RELEASED grant again changes nothing; any other status is ErrEnded. An
// ACTIVE grant released before its expiry counts for the subject's
// reputation (a clean release).
func (s *Service) Release(ctx context.Context, entryIDs []string, id, by string) (*typesv1.Grant, error) {
	g, err := s.store.GetGrant(ctx, id)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(entryIDs, g.GetEntryId()) {
		return nil, fmt.Errorf("grant %q: %w", id, store.ErrNotFound)
	}
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_RELEASED {
		return g, nil
	}
	ended, prev, err := s.end(ctx, id, typesv1.GrantStatus_GRANT_STATUS_RELEASED, "", by)
	if err != nil {
		return nil, err
	}
	s.ended(ctx, ended, ended.GetSpiffeId())
	if prev == typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
		s.observe(ctx, ended, reputation.KindGrantReleased, "grant released before its expiry", ReporterServer)
	}
	return ended, nil
}

// Revoke ends a PENDING or ACTIVE grant at once on behalf of an operator
// (by); introspection answers inactive from then on. reason is required
// (grantreq.ErrInvalidRequest); a grant that has ended is ErrEnded.
func (s *Service) Revoke(ctx context.Context, id, reason, by string) (*typesv1.Grant, error) {
	if err := grantreq.CheckText("reason", reason, 1, MaxRevokeReasonBytes); err != nil {
		return nil, err
	}
	g, _, err := s.end(ctx, id, typesv1.GrantStatus_GRANT_STATUS_REVOKED, reason, by)
	if err != nil {
		return nil, err
	}
	s.revoked(ctx, g, by)
	return g, nil
}

// revoked logs and records a revocation by `by`.
func (s *Service) revoked(ctx context.Context, g *typesv1.Grant, by string) {
	telemetry.Logger(ctx, s.log).LogAttrs(ctx, slog.LevelInfo, "grant revoked",
		slog.String(telemetry.GrantID, g.GetId()), slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
		slog.String(telemetry.Reason, g.GetDecisionReason()), slog.String("by", by))
	s.ended(ctx, g, by)
}

// RevokeSubject revokes every PENDING and ACTIVE grant of spiffeID at
// once, on behalf of the server (ended_by "server"), with reason; the
// reputation service calls it when the subject becomes restricted. It
// returns how many grants it revoked. Grants that end meanwhile are
// skipped; other failures are returned, joined, after trying every grant.
func (s *Service) RevokeSubject(ctx context.Context, spiffeID, reason string) (int, error) {
	if spiffeID == "" {
		return 0, fmt.Errorf("spiffe_id: required: %w", grantreq.ErrInvalidRequest)
	}
	if err := grantreq.CheckText("reason", reason, 1, MaxRevokeReasonBytes); err != nil {
		return 0, err
	}
	var ids []string
	for _, st := range []typesv1.GrantStatus{typesv1.GrantStatus_GRANT_STATUS_PENDING, typesv1.GrantStatus_GRANT_STATUS_ACTIVE} {
		req := store.ListGrantsRequest{SpiffeID: spiffeID, Status: st, PageSize: sweepPage}
		for {
			grants, next, err := s.store.ListGrants(ctx, req)
			if err != nil {
				return 0, fmt.Errorf("list grants of %s: %w", spiffeID, err)
			}
			for _, g := range grants {
				ids = append(ids, g.GetId())
			}
			if next == "" {
				break
			}
			req.PageToken = next
		}
	}
	n := 0
	var errs []error
	for _, id := range ids {
		g, _, err := s.end(ctx, id, typesv1.GrantStatus_GRANT_STATUS_REVOKED, reason, ReporterServer)
		switch {
		case errors.Is(err, ErrEnded), errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("revoke grant %s: %w", id, err))
			continue
		}
		s.revoked(ctx, g, ReporterServer)
		n++
	}
	return n, errors.Join(errs...)
}

// end moves a live grant to status; reason, if set, replaces the decision
// reason. It returns the grant and the status it had. A grant that is not
// live, or is past its deadline, is ErrEnded.
func (s *Service) end(ctx context.Context, id string, status typesv1.GrantStatus, reason, by string) (*typesv1.Grant, typesv1.GrantStatus, error) {
	now := s.clock.Now()
	var prev typesv1.GrantStatus
	g, err := s.store.UpdateGrant(ctx, id, func(g *typesv1.Grant) error {
		if expired(g, now) || !live(g.Status) {
			cp := proto.Clone(g).(*typesv1.Grant)
			expire(cp, now)
			return fmt.Errorf("grant %q is %s: %w", id, statusName(cp.Status), ErrEnded)
		}
		prev = g.Status
		g.Status, g.EndedAt, g.EndedBy = status, now.Unix(), by
		if reason != "" {
			g.DecisionReason = reason
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	s.waiters.wake(id)
	return g, prev, nil
}

// statusName is a status in lower case without its prefix: "active".
func statusName(st typesv1.GrantStatus) string {
	name := st.String()
	const prefix = "GRANT_STATUS_"
	if len(name) > len(prefix) {
		name = name[len(prefix):]
	}
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Sweep records the expiry of every live grant that is due and returns how
// many it changed. Failures are logged: the next sweep tries again, and
// reads see expiry regardless.
func (s *Service) Sweep(ctx context.Context) int {
	n := 0
	for _, st := range []typesv1.GrantStatus{typesv1.GrantStatus_GRANT_STATUS_PENDING, typesv1.GrantStatus_GRANT_STATUS_ACTIVE} {
		req := store.ListGrantsRequest{Status: st, PageSize: sweepPage}
		for {
			grants, next, err := s.store.ListGrants(ctx, req)
			if err != nil {
				s.warn(ctx, "list grants to expire", err)
				return n
			}
			now := s.clock.Now()
			for _, g := range grants {
				if !expired(g, now) {
					continue
				}
				if _, err := s.expireStored(ctx, g.GetId()); err != nil {
					s.warn(ctx, "expire grant", err)
					continue
				}
				n++
			}
			if next == "" {
				break
			}
			req.PageToken = next
		}
	}
	if n > 0 {
		s.log.Info("recorded expired grants", telemetry.Count, n)
	}
	return n
}

func (s *Service) warn(ctx context.Context, op string, err error) {
	if ctx.Err() == nil {
		s.log.Warn(op, telemetry.Error, err.Error())
	}
}
