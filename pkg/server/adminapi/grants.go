package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nhid/nhid/pkg/grantreq"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of identifiers the grant and SVID services take.
const (
	maxGrantIDLen    = 256
	maxSPIFFEIDLen   = 2048
	maxLedgerIDBytes = 256
)

// Grants is what the grant service needs; *grant.Service satisfies it.
type Grants interface {
	List(ctx context.Context, req store.ListGrantsRequest) ([]*typesv1.Grant, string, error)
	Get(ctx context.Context, id string) (*typesv1.Grant, error)
	Revoke(ctx context.Context, id, reason, by string) (*typesv1.Grant, error)
}

// filteredPage checks a list request's page size and token (pageSize)
// and its optional spiffe_id filter, reporting every problem.
func filteredPage(size int32, token, spiffeID string) (int, error) {
	n, err := pageSize(size, token)
	if len(spiffeID) > maxSPIFFEIDLen {
		err = errors.Join(err, fmt.Errorf("spiffe_id: is %d bytes, at most %d allowed", len(spiffeID), maxSPIFFEIDLen))
	}
	return n, err
}

type grantService struct {
	adminv1.UnimplementedGrantServiceServer
	s *Service
}

// ListGrants returns one page of grants, newest first.
func (h *grantService) ListGrants(ctx context.Context, req *adminv1.ListGrantsRequest) (*adminv1.ListGrantsResponse, error) {
	size, err := filteredPage(req.GetPageSize(), req.GetPageToken(), req.GetSpiffeId())
	if _, known := typesv1.GrantStatus_name[int32(req.GetStatus())]; !known {
		err = errors.Join(err, fmt.Errorf("status: %d is not a grant status", req.GetStatus()))
	}
	if err != nil {
		return nil, invalidArgument(err)
	}
	grants, next, err := h.s.grants.List(ctx, store.ListGrantsRequest{
		SpiffeID: req.GetSpiffeId(), Status: req.GetStatus(), PageSize: size, PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, h.s.grantError(ctx, err)
	}
	return &adminv1.ListGrantsResponse{Grants: grants, NextPageToken: next}, nil
}

// GetGrant returns one grant.
func (h *grantService) GetGrant(ctx context.Context, req *adminv1.GetGrantRequest) (*adminv1.GetGrantResponse, error) {
	if err := checkGrantID(req.GetId()); err != nil {
		return nil, err
	}
	g, err := h.s.grants.Get(ctx, req.GetId())
	if err != nil {
		return nil, h.s.grantError(ctx, err)
	}
	return &adminv1.GetGrantResponse{Grant: g}, nil
}

// actionGrantRevoke is the grant revocation's action, after
// audit.ActionAdminPrefix.
const actionGrantRevoke = "grant.revoke"

// RevokeGrant ends a pending or active grant at once.
func (h *grantService) RevokeGrant(ctx context.Context, req *adminv1.RevokeGrantRequest) (_ *adminv1.RevokeGrantResponse, retErr error) {
	ch := change{action: actionGrantRevoke, details: map[string]any{telemetry.Reason: req.GetReason()}}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	if err := checkGrantID(req.GetId()); err != nil {
		return nil, err
	}
	ch.target = req.GetId()
	g, err := h.s.grants.Revoke(ctx, req.GetId(), req.GetReason(), callerName(ctx))
	if err != nil {
		return nil, h.s.grantError(ctx, err)
	}
	ch.details[telemetry.SPIFFEID], ch.details[telemetry.Status] = g.GetSpiffeId(), g.GetStatus().String()
	ch.details["owner"] = g.GetOwner()
	ch.attrs = []slog.Attr{
		slog.String(telemetry.GrantID, g.GetId()),
		slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
		slog.String(telemetry.Status, g.GetStatus().String()),
		slog.String(telemetry.Reason, req.GetReason()),
	}
	return &adminv1.RevokeGrantResponse{Grant: g}, nil
}

func checkGrantID(id string) error {
	switch {
	case id == "":
		return status.Error(codes.InvalidArgument, "id: required")
	case len(id) > maxGrantIDLen:
		return status.Errorf(codes.InvalidArgument, "id: is %d bytes, at most %d allowed", len(id), maxGrantIDLen)
	}
	return nil
}

// grantError turns a grant failure into the status the operator gets.
func (s *Service) grantError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, grantreq.ErrInvalidRequest):
		return invalidArgument(err)
	case errors.Is(err, grant.ErrEnded):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return s.storeError(ctx, err)
}
