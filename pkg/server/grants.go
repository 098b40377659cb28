package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/nhid/nhid/pkg/grantreq"
	"net"
	"path/filepath"
	"time"

	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/server/relyingparty"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Defaults of the grant settings.
const (
	DefaultRelyingPartyAddress = "127.0.0.1:8443"
	DefaultGrantRetention      = 24 * time.Hour
)

// PolicyConfig locates the grant policy (see pkg/policy).
type PolicyConfig struct {
	// Path is a policy file or a directory of *.yaml files. Empty means no
	// policy: every grant request is refused with FailedPrecondition and
	// nothing is stored.
	Path string
	// Location is the time zone of the policy's time.* variables; nil is
	// UTC.
	Location *time.Location
}

// GrantsConfig holds the grant settings.
type GrantsConfig struct {
	// MaxTTL caps every grant; default 1h (grantreq.DefaultMaxTTL).
	MaxTTL time.Duration
	// Retention keeps ended and expired grants listable; default 24h.
	Retention time.Duration
	// Limits bound requests; the zero value means grantreq.DefaultLimits().
	Limits grantreq.Limits
}

// checkGrants validates the grant settings and fills their defaults.
func (cfg *Config) checkGrants() []error {
	var errs []error
	if cfg.Policy.Path != "" {
		abs, err := filepath.Abs(cfg.Policy.Path)
		if err != nil {
			errs = append(errs, fmt.Errorf("server config: Policy.Path: %w", err))
		}
		cfg.Policy.Path = abs
	}
	if cfg.RelyingPartyAddress != "" {
		if err := ValidateAddress(cfg.RelyingPartyAddress); err != nil {
			errs = append(errs, fmt.Errorf("server config: RelyingPartyAddress: %w", err))
		}
	}
	switch {
	case cfg.Grants.Retention < 0:
		errs = append(errs, fmt.Errorf("server config: Grants.Retention: %v is negative", cfg.Grants.Retention))
	case cfg.Grants.Retention == 0:
		cfg.Grants.Retention = DefaultGrantRetention
	}
	return errs
}

// buildGrants loads the policy and builds the grant service; agentapi and
// adminapi are built with it afterwards.
func (s *Server) buildGrants(c *components) error {
	var decider grant.Decider
	if path := s.cfg.Policy.Path; path != "" {
		engine, err := policy.New(policy.Config{
			Path: path, Location: s.cfg.Policy.Location, Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
		})
		if err != nil {
			return fmt.Errorf("grant policy: %w", err)
		}
		c.policy, decider = engine, engine
		s.policy.Store(engine)
	} else {
		s.log.Warn("no grant policy configured (policy.path): grant requests are refused")
	}
	var err error
	c.grants, err = grant.New(grant.Config{
		TrustDomain: s.cfg.TrustDomain, Store: c.store, Policy: decider, Signer: c.ca,
		Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
		MaxTTL: s.cfg.Grants.MaxTTL, Limits: s.cfg.Grants.Limits,
		ApprovalTimeout: s.cfg.Approvals.Timeout, Entries: c.store,
		Reputation: c.reputation, Audit: c.audit, Notifier: c.notifier,
	})
	return err
}

// buildRelyingParty builds the relying-party endpoints when they have an
// address; they present the same server SVID as the agent API.
func (s *Server) buildRelyingParty(c *components) error {
	if s.cfg.RelyingPartyAddress == "" {
		return nil
	}
	var err error
	c.rp, err = relyingparty.New(relyingparty.Config{
		TrustDomain: s.cfg.TrustDomain,
		Bundles:     servertls.NewBundles(c.store, s.cfg.TrustDomain, s.cfg.Clock),
		Certificate: c.tls.Certificate,
		Grants:      c.store,
		Audience:    c.grants.Audience(),
		Log:         s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
		Reputation: c.reportObserver(), ReportRate: s.cfg.Reputation.reportRate(), ReportBurst: s.cfg.Reputation.ReportBurst,
	})
	return err
}

// listenRelyingParty opens the relying-party listener when it has an address.
func (s *Server) listenRelyingParty(ctx context.Context, c *components) error {
	if s.cfg.RelyingPartyAddress == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", s.cfg.RelyingPartyAddress)
	if err != nil {
		return fmt.Errorf("relying-party endpoints: listen on %s: %w", s.cfg.RelyingPartyAddress, err)
	}
	c.rpLis = lis
	addr := lis.Addr()
	s.rpAddr.Store(&addr)
	return nil
}

// runGrantJobs adds the grant service, the policy watcher and the
// relying-party endpoints to the server's jobs.
func (s *Server) runGrantJobs(ctx context.Context, c *components, goFn func(func() error)) {
	goFn(func() error { return c.grants.Run(ctx) })
	if c.policy != nil {
		goFn(func() error { return c.policy.Run(ctx) })
	}
	if c.rp != nil {
		goFn(func() error { return c.rp.Serve(ctx, c.rpLis) })
		s.log.Info("relying-party endpoints ready", telemetry.Address, c.rpLis.Addr().String())
	}
}

// RelyingPartyAddr is the relying-party endpoints' address; nil before
// Ready or when disabled.
func (s *Server) RelyingPartyAddr() net.Addr { return loadAddr(&s.rpAddr) }

// ReloadPolicy loads the grant policy again, as on SIGHUP. A policy that
// does not load leaves the rules in force and is returned as the error.
func (s *Server) ReloadPolicy() error {
	var err error
	switch engine := s.policy.Load(); {
	case s.cfg.Policy.Path == "":
		err = errors.New("no grant policy is configured (policy.path)")
	case engine == nil:
		err = errors.New("the server has not loaded its grant policy yet")
	default:
		return engine.Reload() // logs its own failures
	}
	s.log.Warn("grant policy not reloaded", telemetry.Error, err.Error())
	return err
}
