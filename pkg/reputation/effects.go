package reputation

import (
	"context"
	"fmt"
	"math"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Threshold names, in audit details, notifications and metric labels.
const (
	thresholdAlert    = "alert"
	thresholdRestrict = "restrict"
)

// committed acts on a stored change: metrics, the audit record and, when
// it crossed a threshold, the log line, the owner's notification and the
// revocation. It runs after the store commit so that nobody is told about
// a change that was not kept.
func (s *Service) committed(ctx context.Context, c change) {
	s.metrics.events.WithLabelValues(string(c.ev.Kind)).Inc()
	reporter := c.ev.Reporter
	if reporter == "" {
		reporter = "server"
	}
	s.cfg.Audit.Record(ctx, audit.Event{
		Actor: reporter, OnBehalfOf: c.owner, Action: audit.ActionReputationChange,
		Target: c.ev.SPIFFEID, Outcome: audit.OutcomeSuccess, Reason: c.ev.Reason,
		Details: map[string]any{
			"kind": string(c.ev.Kind), "delta": round(c.delta), "score_before": round(c.before),
			"score_after": round(c.after), "grant_id": c.ev.GrantID,
		},
	})
	if c.alerted {
		s.crossed(ctx, c, thresholdAlert, s.cfg.AlertBelow, notify.TypeReputationAlert, 0)
	}
	if c.restricted {
		revoked := s.revoke(ctx, c)
		s.crossed(ctx, c, thresholdRestrict, s.cfg.RestrictBelow, notify.TypeReputationRestricted, revoked)
	}
}

// crossed logs, audits and notifies one threshold crossing.
func (s *Service) crossed(ctx context.Context, c change, name string, limit float64, typ string, revoked int) {
	s.metrics.crossings.WithLabelValues(name).Inc()
	score := int(math.Round(c.after))
	attrs := []any{telemetry.SPIFFEID, c.ev.SPIFFEID, "score", score, "threshold", name, "limit", limit,
		"kind", string(c.ev.Kind), "owner", c.owner}
	if name == thresholdRestrict {
		attrs = append(attrs, "revoked_grants", revoked)
	}
	s.log.WarnContext(ctx, "reputation below "+name+" threshold", attrs...)
	details := map[string]any{
		"threshold": name, "limit": limit, "score": score, "kind": string(c.ev.Kind),
		"reason": c.ev.Reason, "reporter": c.ev.Reporter, "grant_id": c.ev.GrantID,
	}
	if name == thresholdRestrict {
		details["revoked_grants"] = revoked
		details["restricted"] = true
	}
	s.cfg.Audit.Record(ctx, audit.Event{
		Actor: "server", OnBehalfOf: c.owner, Action: audit.ActionReputationAlert,
		Target: c.ev.SPIFFEID, Outcome: audit.OutcomeSuccess,
		Reason: fmt.Sprintf("score %d fell below the %s threshold %v", score, name, limit), Details: details,
	})
	s.cfg.Notifier.Notify(ctx, notify.Notification{Type: typ, Owner: c.owner, Subject: c.ev.SPIFFEID, Data: details})
}

// revoke ends the restricted subject's outstanding grants and returns how
// many it ended; failures are logged, not returned: the score is stored
// and new grants need approval whatever happened here.
func (s *Service) revoke(ctx context.Context, c change) int {
	box := s.revoker.Load()
	if box == nil {
		s.log.WarnContext(ctx, "reputation restricted but no grant revoker is set: outstanding grants stay",
			telemetry.SPIFFEID, c.ev.SPIFFEID)
		return 0
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	reason := fmt.Sprintf("reputation %d fell below the restrict threshold %v", int(math.Round(c.after)), s.cfg.RestrictBelow)
	n, err := box.r.RevokeSubject(rctx, c.ev.SPIFFEID, reason)
	if err != nil {
		s.metrics.failures.Inc()
		s.log.ErrorContext(ctx, "revoke grants of a restricted subject", telemetry.SPIFFEID, c.ev.SPIFFEID,
			"revoked_grants", n, telemetry.Error, err.Error())
	}
	s.metrics.revoked.Add(float64(n))
	return n
}

// round keeps two decimals for records people read.
func round(v float64) float64 { return math.Round(v*100) / 100 }
