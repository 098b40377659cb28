package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Reputations is what the reputation service needs; *reputation.Service
// satisfies it.
type Reputations interface {
	List(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Reputation, string, error)
	Get(ctx context.Context, spiffeID string) (*typesv1.Reputation, error)
	Reset(ctx context.Context, spiffeID, reason, by string) (*typesv1.Reputation, error)
}

type reputationService struct {
	adminv1.UnimplementedReputationServiceServer
	s *Service
}

// ListReputations returns one page of scores, decayed to now, ordered by
// SPIFFE ID.
func (h *reputationService) ListReputations(ctx context.Context, req *adminv1.ListReputationsRequest) (*adminv1.ListReputationsResponse, error) {
	size, err := pageSize(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, invalidArgument(err)
	}
	rs, next, err := h.s.reputations.List(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, h.s.reputationError(ctx, err)
	}
	return &adminv1.ListReputationsResponse{Reputations: rs, NextPageToken: next}, nil
}

// GetReputation returns one subject's score and recent events.
func (h *reputationService) GetReputation(ctx context.Context, req *adminv1.GetReputationRequest) (*adminv1.GetReputationResponse, error) {
	if err := checkReputationID(req.GetSpiffeId()); err != nil {
		return nil, invalidArgument(err)
	}
	r, err := h.s.reputations.Get(ctx, req.GetSpiffeId())
	if err != nil {
		return nil, h.s.reputationError(ctx, err)
	}
	return &adminv1.GetReputationResponse{Reputation: r}, nil
}

// ResetReputation sets a score back to the baseline, recording the
// operator and the reason.
func (h *reputationService) ResetReputation(ctx context.Context, req *adminv1.ResetReputationRequest) (_ *adminv1.ResetReputationResponse, err error) {
	ch := change{action: "reputation.reset", details: map[string]any{}}
	defer func() { h.s.audit(ctx, ch, err) }()
	var errs []error
	if err := checkReputationID(req.GetSpiffeId()); err != nil {
		errs = append(errs, err)
	} else {
		ch.target = req.GetSpiffeId()
	}
	switch reason := req.GetReason(); {
	case strings.TrimSpace(reason) == "":
		errs = append(errs, errors.New("reason: required: say why the score is reset"))
	case len(reason) > reputation.MaxReasonBytes:
		errs = append(errs, fmt.Errorf("reason: is %d bytes, at most %d allowed", len(reason), reputation.MaxReasonBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, invalidArgument(err)
	}
	ch.details["reason"] = req.GetReason()
	r, err := h.s.reputations.Reset(ctx, req.GetSpiffeId(), req.GetReason(), callerName(ctx))
	if err != nil {
		return nil, h.s.reputationError(ctx, err)
	}
	ch.details["score"] = r.GetScore()
	ch.attrs = []slog.Attr{slog.String(telemetry.SPIFFEID, r.GetSpiffeId()), slog.String(telemetry.Reason, req.GetReason())}
	return &adminv1.ResetReputationResponse{Reputation: r}, nil
}

// checkReputationID accepts a SPIFFE ID of any trust domain: scores are
// kept for whatever the grant service and relying parties named.
func checkReputationID(id string) error {
	switch {
	case id == "":
		return errors.New("spiffe_id: required")
	case len(id) > maxSPIFFEIDLen:
		return fmt.Errorf("spiffe_id: is %d bytes, at most %d allowed", len(id), maxSPIFFEIDLen)
	}
	if _, err := spiffeid.FromString(id); err != nil {
		return fmt.Errorf("spiffe_id: %q is not a SPIFFE ID: %v", id, err)
	}
	return nil
}

// reputationError turns a reputation failure into the status the operator
// gets.
func (s *Service) reputationError(ctx context.Context, err error) error {
	if errors.Is(err, reputation.ErrInvalid) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return s.storeError(ctx, err)
}
