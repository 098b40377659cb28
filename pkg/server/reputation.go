package server

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/server/relyingparty"
)

// ReputationConfig holds the reputation settings (see pkg/reputation);
// zero values take its defaults.
type ReputationConfig struct {
	// Disabled turns scores off: every subject stays at the baseline,
	// nothing restricts grants, and /report is not served.
	Disabled bool
	// Baseline, HalfLife, AlertBelow, RestrictBelow, Weights and
	// MaxEvents are reputation.Config's.
	Baseline      float64
	HalfLife      time.Duration
	AlertBelow    float64
	RestrictBelow float64
	Weights       map[reputation.Kind]float64
	MaxEvents     int
	// ReportsPerMinute and ReportBurst bound each relying party's misuse
	// reports; defaults 10 a minute, burst 10.
	ReportsPerMinute float64
	ReportBurst      int
}

// scoring is the reputation.Config of the settings, without the parts
// the server provides.
func (r ReputationConfig) scoring() reputation.Config {
	return reputation.Config{
		Baseline: r.Baseline, HalfLife: r.HalfLife, AlertBelow: r.AlertBelow, RestrictBelow: r.RestrictBelow,
		Weights: r.Weights, MaxEvents: r.MaxEvents,
	}
}

// checkReputation validates the reputation settings.
func (cfg *Config) checkReputation() []error {
	r := cfg.Reputation
	if r.Disabled {
		return nil
	}
	var errs []error
	if err := r.scoring().Check(); err != nil {
		errs = append(errs, fmt.Errorf("server config: Reputation: %w", err))
	}
	if r.ReportsPerMinute < 0 || r.ReportBurst < 0 {
		errs = append(errs, fmt.Errorf("server config: Reputation: ReportsPerMinute (%v) and ReportBurst (%d) may not be negative",
			r.ReportsPerMinute, r.ReportBurst))
	}
	return errs
}

// buildReputation builds the reputation service unless it is disabled;
// c.notifier must be built. The grant service, built next, asks it for
// standings; runReputationJobs hands it the grant service to revoke with.
func (s *Server) buildReputation(c *components) error {
	if s.cfg.Reputation.Disabled {
		c.reputation = nil
		s.log.Info("reputation scores are disabled (reputation.enabled: false)")
		return nil
	}
	rc := s.cfg.Reputation.scoring()
	rc.Store, rc.Notifier, rc.Audit = c.store, c.notifier, componentAudit{c}
	rc.Log, rc.Clock, rc.Metrics = s.log, s.cfg.Clock, s.cfg.Metrics
	svc, err := reputation.New(rc)
	if err != nil {
		return err
	}
	c.reputation = svc
	return nil
}

// componentAudit records to whatever audit log c holds when an event
// happens, so the order in which the two are built does not matter.
type componentAudit struct{ c *components }

func (a componentAudit) Record(ctx context.Context, ev audit.Event) {
	audit.OrDiscard(a.c.audit).Record(ctx, ev)
}

// reputationService is the reputation service, or nil when disabled.
func (c *components) reputationService() *reputation.Service {
	svc, _ := c.reputation.(*reputation.Service)
	return svc
}

// reputationAdmin is what the admin API serves; a nil interface when
// scores are disabled, so that the service is not registered.
func (c *components) reputationAdmin() adminapi.Reputations {
	if svc := c.reputationService(); svc != nil {
		return svc
	}
	return nil
}

// reportObserver takes relying parties' reports; a nil interface when
// scores are disabled, so that /report is not served.
func (c *components) reportObserver() relyingparty.Observer {
	if svc := c.reputationService(); svc != nil {
		return svc
	}
	return nil
}

// reportRate is the per-reporter rate of /report.
func (r ReputationConfig) reportRate() rate.Limit {
	return rate.Limit(r.ReportsPerMinute / 60)
}

// runReputationJobs connects the reputation service to the grant service
// (which is built after it) and runs the notifier, which drains its queue
// when ctx ends.
func (s *Server) runReputationJobs(ctx context.Context, c *components, goFn func(func() error)) {
	if svc := c.reputationService(); svc != nil {
		svc.SetRevoker(c.grants)
	}
	s.runNotifier(ctx, c, goFn)
}
