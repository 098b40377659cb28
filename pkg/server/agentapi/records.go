package agentapi

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of what one audit record lists, so that a 500-item mint batch or
// a node with many selectors still makes a record of reasonable size. The
// counts are always exact; the lists say when they were cut.
const (
	maxRecordSVIDs     = 100
	maxRecordFailures  = 20
	maxRecordSelectors = 64
	maxRecordAudiences = maxAudiences
	// maxRecordText bounds a string an agent or a peer chose (an entry id
	// it asked for, an attestor name) quoted in a record.
	maxRecordText = 256
)

// Failed attestations are recorded at most this often: any peer can call
// Attest, and a flood of refusals must not fill the audit log. Those left
// out are counted (attest_records_dropped_total).
const (
	attestFailureRecordRate  = 20 // per second
	attestFailureRecordBurst = 200
)

// reporterServer is the Reporter of the reputation events the server
// observes itself.
const reporterServer = "server"

// SVID kinds in svid.mint records.
const (
	mintKindX509  = "x509"
	mintKindJWT   = "jwt"
	mintKindAgent = "agent_x509"
)

// record hands ev to the audit log. The request's cancellation does not
// reach the log: a record of a call the peer abandoned is still a record.
func (s *Service) record(ctx context.Context, ev audit.Event) {
	s.audit.Record(context.WithoutCancel(ctx), ev)
}

// observe tells reputation of ev, if scores are tracked. A failure is
// logged, never the caller's problem.
func (s *Service) observe(ctx context.Context, ev reputation.Event) {
	if s.cfg.Reputation == nil {
		return
	}
	if _, err := s.cfg.Reputation.Observe(context.WithoutCancel(ctx), ev); err != nil {
		telemetry.Logger(ctx, s.log).Warn("reputation update failed", telemetry.SPIFFEID, ev.SPIFFEID,
			telemetry.Reason, string(ev.Kind), telemetry.Error, err.Error())
	}
}

// recordAttest writes the node.attest record of one Attest call. (Calls
// refused for want of a slot never start an attestation and are only
// counted.)
func (s *Service) recordAttest(ctx context.Context, a *attestation, err error) {
	typ := metricAttestor(s, a.typ)
	details := map[string]any{"attestor": typ, "address": a.addr}
	if typ == "unknown" && a.typ != "" {
		details["attestor_requested"] = clip(a.typ)
	}
	ev := audit.Event{Actor: a.nodeID, Action: audit.ActionNodeAttest, Target: a.nodeID, Details: details}
	if err == nil && a.res != nil {
		ev.Outcome = audit.OutcomeSuccess
		details["selectors_count"] = len(a.res.GetSelectors())
		details["selectors"] = firstN(a.res.GetSelectors(), maxRecordSelectors)
		details["can_reattest"] = a.canReattest
		if leaf, perr := x509.ParseCertificate(a.res.GetSvidChain()[0]); perr == nil {
			details["serial"] = serialHex(leaf)
			details["expires_at"] = leaf.NotAfter.Unix()
		}
		s.record(ctx, ev)
		return
	}
	ev.Outcome, ev.Reason = outcomeOf(err), status.Convert(err).Message()
	if a.nodeID == "" {
		// Nobody vouches for who this was: name the attempt by its
		// attestor and address.
		ev.Actor = typ + "@" + a.addr
	}
	// Any peer can call Attest, and a banned node can keep presenting
	// evidence: a flood of failures must not fill the log.
	if !s.attestFailures.Allow() {
		s.metrics.attestRecordsDropped.Inc()
		return
	}
	s.record(ctx, ev)
}

// recordTrust logs a continuous-attestation trust change (the "audit"
// log line, kept for log-based alerting) and writes its node.reattest
// record. event is auditNodeTrusted or auditNodeUntrusted.
func (s *Service) recordTrust(ctx context.Context, event, actor, nodeID, typ, reason string) {
	s.log.Warn("audit", telemetry.Event, event, telemetry.NodeID, nodeID,
		telemetry.Attestor, typ, telemetry.Reason, reason)
	outcome := audit.OutcomeFailure
	if event == auditNodeTrusted {
		outcome = audit.OutcomeSuccess
	}
	s.record(ctx, audit.Event{
		Actor: actor, Action: audit.ActionNodeReattest, Target: nodeID, Outcome: outcome, Reason: reason,
		Details: map[string]any{"event": event, "attestor": typ},
	})
}

// recordX509Mint writes the one svid.mint record of a MintX509SVIDs call:
// what was asked, what was issued (nothing when err is set: no SVID
// leaves the server without its ledger row) and what was refused.
func (s *Service) recordX509Mint(ctx context.Context, c *caller, req *agentv1.MintX509SVIDsRequest, resp *agentv1.MintX509SVIDsResponse, rows []*typesv1.IssuedSVID, err error) {
	if err != nil {
		rows = nil
	}
	details := map[string]any{"kind": mintKindX509, "requested": len(req.GetParams()), "issued": len(rows)}
	ev := audit.Event{Actor: c.id.String(), Action: audit.ActionSVIDMint, Outcome: audit.OutcomeSuccess, Details: details}
	svids := make([]map[string]any, 0, min(len(rows), maxRecordSVIDs))
	ids, owners := map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		ids[r.GetSpiffeId()], owners[r.GetOwner()] = true, true
		if len(svids) < maxRecordSVIDs {
			svids = append(svids, map[string]any{"entry_id": r.GetEntryId(), "spiffe_id": r.GetSpiffeId(), "serial": r.GetId()})
		}
	}
	details["svids"] = svids
	if len(rows) > maxRecordSVIDs {
		details["svids_truncated"] = true
	}
	if len(ids) == 1 {
		for id := range ids {
			ev.Target = id
		}
	}
	if len(owners) == 1 {
		for o := range owners {
			ev.OnBehalfOf = o
		}
	}
	var failures []map[string]any
	failed := 0
	for _, r := range resp.GetResults() {
		if r.GetCode() == 0 {
			continue
		}
		failed++
		if len(failures) < maxRecordFailures {
			failures = append(failures, map[string]any{
				"entry_id": clip(r.GetEntryId()), "code": codes.Code(r.GetCode()).String(), "message": r.GetMessage(),
			})
		}
	}
	details["failed"] = failed
	if failed > 0 {
		details["failures"] = failures
	}
	switch {
	case err != nil:
		ev.Outcome, ev.Reason = outcomeOf(err), status.Convert(err).Message()
	case len(rows) == 0:
		ev.Outcome, ev.Reason = audit.OutcomeFailure, "no SVID issued"
		if len(failures) > 0 {
			ev.Reason += ": " + failures[0]["message"].(string)
		}
	}
	s.record(ctx, ev)
}

// recordJWTMint writes the svid.mint record of a MintJWTSVID call. e and
// row are nil when nothing was issued.
func (s *Service) recordJWTMint(ctx context.Context, c *caller, req *agentv1.MintJWTSVIDRequest, e *typesv1.Entry, row *typesv1.IssuedSVID, err error) {
	details := map[string]any{
		"kind": mintKindJWT, "entry_id": clip(req.GetEntryId()),
		"audience": firstN(req.GetAudience(), maxRecordAudiences),
	}
	ev := audit.Event{Actor: c.id.String(), Action: audit.ActionSVIDMint, Target: e.GetSpiffeId(), OnBehalfOf: e.GetOwner(), Details: details}
	if err != nil {
		ev.Outcome, ev.Reason = outcomeOf(err), status.Convert(err).Message()
		s.record(ctx, ev)
		return
	}
	ev.Outcome = audit.OutcomeSuccess
	details["jti"], details["expires_at"] = row.GetId(), row.GetExpiresAt()
	s.record(ctx, ev)
}

// recordRenew writes the svid.mint record of an agent SVID renewal; leaf
// is nil when the renewal failed.
func (s *Service) recordRenew(ctx context.Context, c *caller, leaf *x509.Certificate, err error) {
	id := c.id.String()
	details := map[string]any{"kind": mintKindAgent, "previous_serial": c.serial}
	ev := audit.Event{Actor: id, Action: audit.ActionSVIDMint, Target: id, Details: details}
	if err != nil {
		ev.Outcome, ev.Reason = outcomeOf(err), status.Convert(err).Message()
	} else {
		ev.Outcome = audit.OutcomeSuccess
		details["serial"], details["expires_at"] = serialHex(leaf), leaf.NotAfter.Unix()
	}
	s.record(ctx, ev)
}

// outcomeOf is the audit outcome of a failed call: a refusal is denied,
// anything else failed.
func outcomeOf(err error) string {
	if status.Code(err) == codes.PermissionDenied {
		return audit.OutcomeDenied
	}
	return audit.OutcomeFailure
}

// clip bounds a string a peer chose before it goes into a record.
func clip(s string) string {
	if len(s) > maxRecordText {
		return strings.ToValidUTF8(s[:maxRecordText], "") + "..."
	}
	return s
}

// firstN is at most n of list, copied.
func firstN(list []string, n int) []string {
	return append([]string(nil), list[:min(len(list), n)]...)
}
