package adminapi

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Approvals is what the approval service needs; *grant.Service satisfies
// it.
type Approvals interface {
	ListPending(ctx context.Context, spiffeID string, pageSize int, pageToken string) ([]*typesv1.Grant, string, error)
	Approve(ctx context.Context, id string, by grant.Principal, reason string) (*typesv1.Grant, error)
	Deny(ctx context.Context, id string, by grant.Principal, reason string) (*typesv1.Grant, error)
}

// Actions of the approval decisions, after audit.ActionAdminPrefix.
const (
	actionApprovalApprove = "approval.approve"
	actionApprovalDeny    = "approval.deny"
)

type approvalService struct {
	adminv1.UnimplementedApprovalServiceServer
	s *Service
}

// ListApprovals lists the grants waiting for approval, oldest first.
func (h *approvalService) ListApprovals(ctx context.Context, req *adminv1.ListApprovalsRequest) (*adminv1.ListApprovalsResponse, error) {
	size, err := filteredPage(req.GetPageSize(), req.GetPageToken(), req.GetSpiffeId())
	if err != nil {
		return nil, invalidArgument(err)
	}
	grants, next, err := h.s.approvals.ListPending(ctx, req.GetSpiffeId(), size, req.GetPageToken())
	if err != nil {
		return nil, h.s.approvalError(ctx, err)
	}
	return &adminv1.ListApprovalsResponse{Grants: grants, NextPageToken: next}, nil
}

// Approve records the caller's approval of a pending grant.
func (h *approvalService) Approve(ctx context.Context, req *adminv1.ApproveRequest) (*adminv1.ApproveResponse, error) {
	g, err := h.decide(ctx, actionApprovalApprove, req.GetId(), req.GetReason(), h.s.approvals.Approve)
	if err != nil {
		return nil, err
	}
	return &adminv1.ApproveResponse{Grant: g}, nil
}

// Deny rejects a pending grant with the caller's reason.
func (h *approvalService) Deny(ctx context.Context, req *adminv1.DenyRequest) (*adminv1.DenyResponse, error) {
	g, err := h.decide(ctx, actionApprovalDeny, req.GetId(), req.GetReason(), h.s.approvals.Deny)
	if err != nil {
		return nil, err
	}
	return &adminv1.DenyResponse{Grant: g}, nil
}

// decide runs one approval decision by the caller and records it as an
// admin change, refused or not.
func (h *approvalService) decide(ctx context.Context, action, id, reason string,
	fn func(context.Context, string, grant.Principal, string) (*typesv1.Grant, error),
) (g *typesv1.Grant, retErr error) {
	ch := change{action: action, details: map[string]any{telemetry.Reason: reason}}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	if err := checkGrantID(id); err != nil {
		return nil, err
	}
	ch.target = id
	by, ok := approver(ctx)
	if !ok {
		return nil, status.Error(codes.PermissionDenied, "approvals: the caller has no kernel credentials; connect over the admin Unix socket")
	}
	g, err := fn(ctx, id, by, reason)
	if err != nil {
		return nil, h.s.approvalError(ctx, err)
	}
	ch.details[telemetry.SPIFFEID], ch.details[telemetry.Status] = g.GetSpiffeId(), g.GetStatus().String()
	ch.details["owner"] = g.GetOwner()
	ch.attrs = []slog.Attr{
		slog.String(telemetry.GrantID, g.GetId()),
		slog.String(telemetry.SPIFFEID, g.GetSpiffeId()),
		slog.String(telemetry.Status, g.GetStatus().String()),
		slog.String(telemetry.Reason, reason),
	}
	return g, nil
}

// approver is the caller as the grant service records approvers: on the
// mTLS listener its SPIFFE ID; on the admin socket the kernel's uid, the
// user name it maps to (empty when it has none) and callerName's
// "unix:<user>(<uid>)".
func approver(ctx context.Context) (grant.Principal, bool) {
	if id, ok := svidCaller(ctx); ok {
		return grant.Principal{Name: id.String(), SPIFFEID: id.String()}, true
	}
	p, ok := peercred.FromContext(ctx)
	if !ok {
		return grant.Principal{}, false
	}
	uid := strconv.FormatUint(uint64(p.UID()), 10)
	user := userNames.lookup(uid)
	if user == uid {
		user = "" // no passwd entry: the name is the uid
	}
	return grant.Principal{Name: callerName(ctx), UID: p.UID(), User: user}, true
}

// approvalError turns an approval failure into the status the caller
// gets.
func (s *Service) approvalError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, grant.ErrSelfApproval):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, grant.ErrAlreadyApproved):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, grant.ErrNotPending):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return s.grantError(ctx, err)
}
