// Package reputation keeps a 0–1000 score per SPIFFE ID. Every subject
// starts at a baseline (500); events move the score by configurable
// weights (a cleanly released grant +, a denied one −, a rejection by a
// person −−, misuse reported by a relying party −−−, ...) and it decays
// exponentially back toward the baseline with a configurable half-life.
// A score that falls below the alert threshold notifies the subject's
// owner; below the restrict threshold, the subject's outstanding grants
// are revoked and every new grant needs approval (the grant service asks
// Standing). docs/reputation.md describes the rules.
//
// The package owns the scoring rules; the store (pkg/store) keeps the
// records, and the callers (the grant service, the relying-party report
// endpoint, the admin API) decide what an event is.
package reputation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ErrInvalid marks an event or reset the service refuses; the message
// names the field.
var ErrInvalid = errors.New("invalid reputation input")

// GrantRevoker revokes a subject's outstanding (pending and active)
// grants and says how many it revoked; *grant.Service implements it.
type GrantRevoker interface {
	RevokeSubject(ctx context.Context, spiffeID, reason string) (int, error)
}

// revokeTimeout bounds the revocation that a restriction triggers; it
// runs detached from the caller's context, which may end first.
const revokeTimeout = 30 * time.Second

var _ Tracker = (*Service)(nil)

// Service scores subjects; it implements Tracker. It is safe for
// concurrent use.
type Service struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	revoker atomic.Pointer[revokerBox]
}

// revokerBox lets an interface value live in an atomic.Pointer.
type revokerBox struct{ r GrantRevoker }

// New checks cfg, reporting every problem at once, and returns the
// service.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(true); err != nil {
		return nil, err
	}
	return &Service{
		cfg:     cfg,
		log:     cfg.Log.With(telemetry.Component, "reputation"),
		metrics: newMetrics(cfg.Metrics),
	}, nil
}

// SetRevoker sets what revokes a restricted subject's grants. The grant
// service is built after this one (it asks Standing), hence a setter;
// until it is called, a restriction revokes nothing and says so in the
// log.
func (s *Service) SetRevoker(r GrantRevoker) {
	if r == nil {
		s.revoker.Store(nil)
		return
	}
	s.revoker.Store(&revokerBox{r: r})
}

// Thresholds returns the alert and restrict thresholds in force.
func (s *Service) Thresholds() (alertBelow, restrictBelow float64) {
	return s.cfg.AlertBelow, s.cfg.RestrictBelow
}

// Baseline returns the score of a subject never seen.
func (s *Service) Baseline() float64 { return s.cfg.Baseline }

// Standing returns the subject's score decayed to now: one store read
// (without the events, when the store can leave them out).
func (s *Service) Standing(ctx context.Context, spiffeID string) (Standing, error) {
	get := s.cfg.Store.GetReputation
	if sr, ok := s.cfg.Store.(store.ReputationScoreReader); ok {
		get = sr.GetReputationScore
	}
	r, err := get(ctx, spiffeID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.standing(s.cfg.Baseline), nil
	case err != nil:
		return Standing{}, fmt.Errorf("reputation of %s: %w", spiffeID, err)
	}
	return s.standing(s.current(r, s.cfg.Clock.Now())), nil
}

// change is one committed score change and what it crossed.
type change struct {
	ev            Event
	before, after float64
	delta         float64
	owner         string
	// alerted and restricted are true when this change crossed below
	// the threshold; a subject already below it does not cross again.
	alerted, restricted bool
}

// Observe applies ev: the stored score decays to now, takes the kind's
// weight, is clamped to 0–1000, and the event is kept with it. A score
// that crosses below a threshold is acted upon once the change is stored
// (see the package doc).
func (s *Service) Observe(ctx context.Context, ev Event) (Standing, error) {
	if err := checkEvent(ev); err != nil {
		return Standing{}, err
	}
	weight, ok := s.cfg.Weights[ev.Kind]
	if !ok {
		return Standing{}, fmt.Errorf("kind: %q is not one of %v: %w", ev.Kind, weightedKinds, ErrInvalid)
	}
	now := s.cfg.Clock.Now()
	var c change
	_, err := s.cfg.Store.UpdateReputation(ctx, ev.SPIFFEID, func(r *typesv1.Reputation) error {
		// fn may run again on a newer record: start over each time.
		c = change{ev: ev, before: s.current(r, now)}
		wasAlerted := r.GetAlerted() && c.before < s.cfg.AlertBelow
		wasRestricted := r.GetRestricted() && c.before < s.cfg.RestrictBelow
		c.after = clamp(c.before + weight)
		c.delta = c.after - c.before
		if ev.Owner != "" {
			r.Owner = ev.Owner
		}
		c.owner = r.Owner
		s.apply(r, c, now)
		c.alerted = r.Alerted && !wasAlerted
		c.restricted = r.Restricted && !wasRestricted
		return nil
	})
	if err != nil {
		s.metrics.failures.Inc()
		return Standing{}, fmt.Errorf("observe %s for %s: %w", ev.Kind, ev.SPIFFEID, err)
	}
	s.committed(ctx, c)
	return s.standing(c.after), nil
}

// apply stores c in r: the new score, the event first, the flags.
func (s *Service) apply(r *typesv1.Reputation, c change, now time.Time) {
	r.Score = c.after
	r.UpdatedAt = now.UnixNano()
	r.Alerted = c.after < s.cfg.AlertBelow
	r.Restricted = c.after < s.cfg.RestrictBelow
	events := make([]*typesv1.ReputationEvent, 0, min(len(r.Events)+1, s.cfg.MaxEvents))
	events = append(events, &typesv1.ReputationEvent{
		Kind: string(c.ev.Kind), Delta: c.delta, ScoreAfter: c.after, At: now.UnixNano(),
		Reason: c.ev.Reason, Reporter: c.ev.Reporter, GrantId: c.ev.GrantID,
	})
	r.Events = append(events, r.Events[:min(len(r.Events), s.cfg.MaxEvents-1)]...)
}

// Reset sets a subject's score back to the baseline and lifts its alert
// and restriction, recording a "reset" event with reason and by (the
// operator). store.ErrNotFound if the subject has no score yet.
func (s *Service) Reset(ctx context.Context, spiffeID, reason, by string) (*typesv1.Reputation, error) {
	ev := Event{SPIFFEID: spiffeID, Kind: KindReset, Reason: reason, Reporter: by}
	if err := checkEvent(ev); err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, fmt.Errorf("reason: required: %w", ErrInvalid)
	}
	now := s.cfg.Clock.Now()
	var c change
	out, err := s.cfg.Store.UpdateReputation(ctx, spiffeID, func(r *typesv1.Reputation) error {
		if isNew(r) {
			return fmt.Errorf("reputation %q: %w", spiffeID, store.ErrNotFound)
		}
		c = change{ev: ev, before: s.current(r, now), after: s.cfg.Baseline, owner: r.Owner}
		c.delta = c.after - c.before
		s.apply(r, c, now)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reset reputation of %s: %w", spiffeID, err)
	}
	s.committed(ctx, c)
	s.log.InfoContext(ctx, "reputation reset", telemetry.SPIFFEID, spiffeID, "by", by,
		telemetry.Reason, reason, "score_before", int(c.before+0.5))
	return out, nil
}

// Get returns a subject's record with the score decayed to now (updated_at
// is now, the flags say what the score entails) and its recent events.
func (s *Service) Get(ctx context.Context, spiffeID string) (*typesv1.Reputation, error) {
	r, err := s.cfg.Store.GetReputation(ctx, spiffeID)
	if err != nil {
		return nil, err
	}
	s.decayed(r, s.cfg.Clock.Now())
	return r, nil
}

// List returns one page of records ordered by SPIFFE ID, decayed to now
// and without their events; pageSize 0 means all.
func (s *Service) List(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Reputation, string, error) {
	rs, next, err := s.cfg.Store.ListReputations(ctx, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	now := s.cfg.Clock.Now()
	for _, r := range rs {
		s.decayed(r, now)
		r.Events = nil
	}
	return rs, next, nil
}

// decayed turns a stored record into its view at now.
func (s *Service) decayed(r *typesv1.Reputation, now time.Time) {
	r.Score = s.current(r, now)
	r.UpdatedAt = now.UnixNano()
	r.Alerted = r.Score < s.cfg.AlertBelow
	r.Restricted = r.Score < s.cfg.RestrictBelow
}

// checkEvent validates what callers pass in.
func checkEvent(ev Event) error {
	var errs []error
	switch {
	case ev.SPIFFEID == "":
		errs = append(errs, errors.New("spiffe_id: required"))
	case len(ev.SPIFFEID) > MaxSPIFFEIDBytes:
		errs = append(errs, fmt.Errorf("spiffe_id: is %d bytes, at most %d allowed", len(ev.SPIFFEID), MaxSPIFFEIDBytes))
	default:
		if _, err := spiffeid.FromString(ev.SPIFFEID); err != nil {
			errs = append(errs, fmt.Errorf("spiffe_id: %q is not a SPIFFE ID: %v", ev.SPIFFEID, err))
		}
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"reason", ev.Reason, MaxReasonBytes}, {"reporter", ev.Reporter, MaxReporterBytes}, {"grant_id", ev.GrantID, MaxGrantIDBytes}, {"owner", ev.Owner, MaxReporterBytes}} {
		if len(f.v) > f.max {
			errs = append(errs, fmt.Errorf("%s: is %d bytes, at most %d allowed", f.name, len(f.v), f.max))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
