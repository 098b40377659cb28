package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// logPreviousStatus is the audit key of a node's status before a change;
// the new one is logged under telemetry.Status.
const logPreviousStatus = "previous_status"

type nodeService struct {
	adminv1.UnimplementedNodeServiceServer
	s *Service
}

// ListNodes returns one page of attested nodes.
func (h *nodeService) ListNodes(ctx context.Context, req *adminv1.ListNodesRequest) (*adminv1.ListNodesResponse, error) {
	size, err := pageSize(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, invalidArgument(err)
	}
	nodes, next, err := h.s.store.ListNodes(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.ListNodesResponse{Nodes: nodes, NextPageToken: next}, nil
}

// GetNode returns one node.
func (h *nodeService) GetNode(ctx context.Context, req *adminv1.GetNodeRequest) (*adminv1.GetNodeResponse, error) {
	if err := h.s.checkNodeID(req.GetSpiffeId()); err != nil {
		return nil, err
	}
	n, err := h.s.store.GetNode(ctx, req.GetSpiffeId())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.GetNodeResponse{Node: n}, nil
}

// EvictNode makes the node attest again before it is served.
func (h *nodeService) EvictNode(ctx context.Context, req *adminv1.EvictNodeRequest) (*adminv1.EvictNodeResponse, error) {
	n, err := h.s.setNodeStatus(ctx, actionNodeEvict, req.GetSpiffeId(), func(n *typesv1.Node) error {
		if n.Status == typesv1.NodeStatus_NODE_STATUS_BANNED {
			// Evicting would let a banned node attest again.
			return errRefused("node is banned; unban it to let it attest again")
		}
		n.Status = typesv1.NodeStatus_NODE_STATUS_EVICTED
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.EvictNodeResponse{Node: n}, nil
}

// BanNode refuses the node until it is unbanned.
func (h *nodeService) BanNode(ctx context.Context, req *adminv1.BanNodeRequest) (*adminv1.BanNodeResponse, error) {
	n, err := h.s.setNodeStatus(ctx, actionNodeBan, req.GetSpiffeId(), func(n *typesv1.Node) error {
		n.Status = typesv1.NodeStatus_NODE_STATUS_BANNED
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.BanNodeResponse{Node: n}, nil
}

// UnbanNode lifts a ban. The node is left evicted: it must attest again,
// since its old SVID was issued before it was banned.
func (h *nodeService) UnbanNode(ctx context.Context, req *adminv1.UnbanNodeRequest) (*adminv1.UnbanNodeResponse, error) {
	n, err := h.s.setNodeStatus(ctx, actionNodeUnban, req.GetSpiffeId(), func(n *typesv1.Node) error {
		if n.Status != typesv1.NodeStatus_NODE_STATUS_BANNED {
			// Unbanning an active node would silently evict it.
			return errRefused(fmt.Sprintf("node is not banned (status %s)", n.Status))
		}
		n.Status = typesv1.NodeStatus_NODE_STATUS_EVICTED
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.UnbanNodeResponse{Node: n}, nil
}

// Actions of the node changes, after audit.ActionAdminPrefix.
const (
	actionNodeEvict = "node.evict"
	actionNodeBan   = "node.ban"
	actionNodeUnban = "node.unban"
)

// setNodeStatus applies apply to the stored node in one store transaction
// and audits the outcome as action. apply refuses with errRefused.
func (s *Service) setNodeStatus(ctx context.Context, action, id string, apply func(*typesv1.Node) error) (_ *typesv1.Node, err error) {
	ch := change{action: action, details: map[string]any{}}
	defer func() { s.audit(ctx, ch, err) }()
	if err := s.checkNodeID(id); err != nil {
		return nil, err
	}
	ch.target = id
	var before typesv1.NodeStatus
	n, err := s.store.UpdateNode(ctx, id, func(n *typesv1.Node) error {
		before = n.Status
		return apply(n)
	})
	var r refusal
	if errors.As(err, &r) {
		ch.details[logPreviousStatus] = before.String()
		return nil, status.Error(codes.FailedPrecondition, string(r))
	}
	if err != nil {
		return nil, s.storeError(ctx, err)
	}
	ch.details[logPreviousStatus] = before.String()
	ch.details[telemetry.Status] = n.GetStatus().String()
	ch.details[telemetry.Revision] = n.GetRevision()
	ch.attrs = []slog.Attr{
		slog.String(telemetry.NodeID, n.GetSpiffeId()),
		slog.String(logPreviousStatus, before.String()),
		slog.String(telemetry.Status, n.GetStatus().String()),
		slog.Int64(telemetry.Revision, n.GetRevision()),
	}
	return n, nil
}

// checkNodeID checks a node's SPIFFE ID from a request: every node has an
// agent ID in the trust domain.
func (s *Service) checkNodeID(id string) error {
	if id == "" {
		return invalidArgument(fmt.Errorf("spiffe_id: is required"))
	}
	sid, err := spiffeid.FromString(id)
	switch {
	case err != nil:
		return invalidArgument(fmt.Errorf("spiffe_id: %q is not a valid SPIFFE ID: %w", id, err))
	case !sid.MemberOf(s.td):
		return invalidArgument(fmt.Errorf("spiffe_id: %q is not in trust domain %q", id, s.td.Name()))
	case !agentid.IsAgent(sid):
		return invalidArgument(fmt.Errorf("spiffe_id: %q is not a node: node IDs look like %s/nhid/agent/<attestor>/<node-id>", id, s.td.IDString()))
	}
	return nil
}

// refusal is a node status change that the node's current state forbids;
// it travels through the store's UpdateNode and becomes FailedPrecondition.
type refusal string

func (r refusal) Error() string { return string(r) }

func errRefused(msg string) error { return refusal(msg) }
