package agentapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Audit events of continuous attestation: a trust change is a log line
// with the stable message "audit" and one of these event names under
// telemetry.Event, and a node.reattest record in the audit log
// (recordTrust, records.go).
const (
	auditNodeUntrusted = "node_untrusted"
	auditNodeTrusted   = "node_trusted"
)

// errNoChange leaves a node record as it is from inside UpdateNode.
var errNoChange = errors.New("no change")

// reattestRound attests one connected node again and records the outcome,
// then queues its next round while its stream is open.
func (s *Service) reattestRound(ctx context.Context, conn *reattestConn) {
	next, keep := s.reattestOnce(ctx, conn)
	if keep && conn.live() && ctx.Err() == nil {
		s.sched.schedule(conn, next)
	}
}

func (s *Service) reattestOnce(ctx context.Context, conn *reattestConn) (next time.Time, keep bool) {
	r := s.reattesters[conn.typ]
	interval := r.ReattestInterval()
	retry := s.clock.Now().Add(min(interval, reattestRetry))
	node, err := s.store.GetNode(ctx, conn.nodeID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		conn.end(status.Error(codes.PermissionDenied, msgUnknown))
		return time.Time{}, false
	case err != nil:
		conn.log.Error("continuous attestation: load node", telemetry.Error, err.Error())
		return retry, true
	}
	switch {
	case !servable(node):
		conn.end(checkNode(node, node.GetSvidSerial()))
		return time.Time{}, false
	case node.GetAttestorType() != conn.typ:
		conn.end(status.Errorf(codes.FailedPrecondition, "the node attested again with %s; reopen the stream", node.GetAttestorType()))
		return time.Time{}, false
	}
	rctx, cancel := context.WithTimeout(ctx, reattestTimeout)
	res, err := r.Reattest(rctx, attestor.ReattestNode{AgentID: conn.agentID, State: node.GetAttestorState()}, conn.challenger(&s.hub.nextID))
	cancel()
	if ctx.Err() != nil {
		return time.Time{}, false
	}
	switch {
	case err == nil:
		err = s.reattestPassed(ctx, conn, res)
	case errors.Is(err, attestor.ErrAttestationFailed):
		err = s.reattestRefused(ctx, conn, err)
	default:
		s.metrics.reattestations.WithLabelValues(conn.typ, outcomeError).Inc()
		conn.log.Warn("continuous attestation round got no verdict; retrying", telemetry.Error, err.Error())
		return retry, true
	}
	if err != nil {
		conn.log.Error("continuous attestation: record the outcome", telemetry.Error, err.Error())
		return retry, true
	}
	return s.clock.Now().Add(interval), true
}

// reattestPassed records fresh evidence that passed: the node's selectors
// and attestor state are replaced, and an untrusted node is trusted again.
func (s *Service) reattestPassed(ctx context.Context, conn *reattestConn, res attestor.NodeResult) error {
	if err := s.checkResult(res); err != nil || res.AgentID != conn.agentID {
		return fmt.Errorf("attestor %s gave a bad result for %s: %v (agent ID %s)", conn.typ, conn.nodeID, err, res.AgentID)
	}
	sels := selector.NewSet(res.Selectors...).Strings()
	now := s.clock.Now()
	var wasUntrusted bool
	_, err := s.store.UpdateNode(ctx, conn.nodeID, func(n *typesv1.Node) error {
		if !servable(n) {
			return errNoChange
		}
		wasUntrusted = n.GetStatus() == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED
		n.Status, n.StatusReason = typesv1.NodeStatus_NODE_STATUS_ACTIVE, ""
		n.Selectors, n.AttestorState, n.VerifiedAt = sels, res.State, now.Unix()
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return err
	}
	s.metrics.reattestations.WithLabelValues(conn.typ, outcomeSuccess).Inc()
	conn.log.Debug("continuous attestation passed", telemetry.Selectors, sels)
	if wasUntrusted {
		s.recordTrust(ctx, auditNodeTrusted, conn.nodeID, conn.nodeID, conn.typ, "a continuous attestation passed again")
	}
	return nil
}

// reattestRefused marks the node untrusted with the refusal's reason and
// tells reputation: every refused round counts against the node.
func (s *Service) reattestRefused(ctx context.Context, conn *reattestConn, refusal error) error {
	s.metrics.reattestations.WithLabelValues(conn.typ, outcomeRefused).Inc()
	reason := "continuous attestation failed: " + strings.TrimPrefix(refusal.Error(), attestor.ErrAttestationFailed.Error()+": ")
	s.observe(ctx, reputation.Event{SPIFFEID: conn.nodeID, Kind: reputation.KindAttestationFailed, Reason: reason, Reporter: reporterServer})
	return s.markUntrusted(ctx, conn.log, conn.nodeID, conn.nodeID, conn.typ, reason)
}

// markUntrusted makes an ACTIVE or UNTRUSTED node UNTRUSTED with reason,
// writing an audit record by actor when its trust changes. Evicted,
// banned and deleted nodes are left to the operator's decision.
func (s *Service) markUntrusted(ctx context.Context, log *slog.Logger, actor, nodeID, typ, reason string) error {
	var was typesv1.NodeStatus
	_, err := s.store.UpdateNode(ctx, nodeID, func(n *typesv1.Node) error {
		was = n.GetStatus()
		if !servable(n) || (was == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED && n.GetStatusReason() == reason) {
			return errNoChange
		}
		n.Status, n.StatusReason = typesv1.NodeStatus_NODE_STATUS_UNTRUSTED, reason
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil && !errors.Is(err, errNoChange):
		return err
	}
	switch was {
	case typesv1.NodeStatus_NODE_STATUS_ACTIVE:
		s.recordTrust(ctx, auditNodeUntrusted, actor, nodeID, typ, reason)
	case typesv1.NodeStatus_NODE_STATUS_UNTRUSTED:
		log.Warn("continuous attestation refused; the node stays untrusted", telemetry.Reason, reason)
	}
	return nil
}

// servable reports whether continuous attestation may change the node: an
// operator's eviction or ban takes precedence over it.
func servable(n *typesv1.Node) bool {
	st := n.GetStatus()
	return st == typesv1.NodeStatus_NODE_STATUS_ACTIVE || st == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED
}

// overdue reports whether a node of a continuously attested type has gone
// longer than its interval plus grace without an attestation that passed.
func (s *Service) overdue(n *typesv1.Node, now time.Time) bool {
	r, ok := s.reattesters[n.GetAttestorType()]
	if !ok {
		return false
	}
	interval := r.ReattestInterval()
	last := time.Unix(max(n.GetVerifiedAt(), n.GetAttestedAt()), 0)
	return now.After(last.Add(interval + overdueGrace(interval)))
}

// sweepOverdue marks overdue ACTIVE nodes untrusted: nodes that keep
// their agent SVID but do not keep their Reattest stream open, or whose
// rounds keep failing without a verdict.
func (s *Service) sweepOverdue(ctx context.Context) {
	if len(s.reattesters) == 0 {
		return
	}
	const page = 500
	token := ""
	for {
		nodes, next, err := s.store.ListNodes(ctx, page, token)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("continuous attestation: list nodes", telemetry.Error, err.Error())
			}
			return
		}
		now := s.clock.Now()
		for _, n := range nodes {
			if n.GetStatus() != typesv1.NodeStatus_NODE_STATUS_ACTIVE || !s.overdue(n, now) {
				continue
			}
			last := time.Unix(max(n.GetVerifiedAt(), n.GetAttestedAt()), 0).UTC().Format(time.RFC3339)
			reason := "continuous attestation overdue: no attestation passed since " + last
			log := s.log.With(telemetry.NodeID, n.GetSpiffeId())
			if err := s.markUntrusted(ctx, log, s.serverID, n.GetSpiffeId(), n.GetAttestorType(), reason); err != nil {
				log.Error("continuous attestation: mark overdue node untrusted", telemetry.Error, err.Error())
			}
		}
		if next == "" {
			return
		}
		token = next
	}
}

// refuseUntrusted is checkTrusted for a call doing what, logged.
func (s *Service) refuseUntrusted(ctx context.Context, n *typesv1.Node, what string) error {
	err := s.checkTrusted(n)
	if err != nil {
		telemetry.Logger(ctx, s.log).Warn(what+" refused", telemetry.Reason, status.Convert(err).Message())
	}
	return err
}

// checkTrusted refuses the renewal of a node's SVID, or minting for its
// workloads, when the node is untrusted or overdue. The message does not
// ask the agent to attest again: an untrusted node stays connected and
// recovers when a continuous attestation passes.
func (s *Service) checkTrusted(n *typesv1.Node) error {
	if n.GetStatus() == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED {
		return status.Error(codes.PermissionDenied, msgUntrusted+": "+n.GetStatusReason())
	}
	if s.overdue(n, s.clock.Now()) {
		return status.Error(codes.PermissionDenied, msgUntrusted+": continuous attestation overdue")
	}
	return nil
}
