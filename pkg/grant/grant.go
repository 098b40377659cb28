// Package grant decides and keeps nhid's just-in-time grants: a workload
// asks, through its agent, for scopes on a resource for one task; policy
// (pkg/policy) decides; an allowed grant is stored ACTIVE and issued as an
// OAuth Transaction Token (draft-ietf-oauth-transaction-tokens) signed by
// the server's JWT key, never wider than the entry's scope_ceiling and
// expiring with the task. A grant that policy (or a restricted reputation)
// sends to approval waits PENDING in the store, a durable queue, until
// enough people approve it, one denies it, or its approval deadline
// passes. A grant ends when its holder releases it, an operator or the
// server revokes it, or it expires. docs/grants.md and docs/approvals.md
// describe the rules.
//
// Every decision, approval and end is handed to the audit log, the
// subject's reputation hears of denials, rejections and clean releases,
// and the owner is notified when a grant waits for them.
//
// The package owns the grant rules and nothing of the transport: the agent
// API authorises the calling node for the entry, the admin API authorises
// the operator, and both turn this package's errors into status codes.
package grant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Defaults for the zero values of Config.
const (
	DefaultSweepEvery = time.Minute
	// BaselineReputation is the score every subject has when reputation
	// is not tracked (Config.Reputation nil): the middle of 0–1000.
	BaselineReputation = 500
	// DefaultApprovalTimeout is how long a grant waits for approval.
	DefaultApprovalTimeout = 15 * time.Minute
	// MinApprovalTimeout and MaxApprovalTimeout bound ApprovalTimeout.
	MinApprovalTimeout = time.Second
	MaxApprovalTimeout = 7 * 24 * time.Hour
)

// Sentinel errors callers branch on, besides grantreq.ErrInvalidRequest and
// store.ErrNotFound (an unknown grant).
var (
	// ErrNoPolicy: the server has no grant policy, so it decides nothing.
	ErrNoPolicy = errors.New("no grant policy configured")
	// ErrEnded: the grant has already ended and cannot be released or
	// revoked.
	ErrEnded = errors.New("grant has ended")
)

// Decider decides a grant request; *policy.Engine satisfies it.
type Decider interface {
	Decide(ctx context.Context, in policy.Input) policy.Decision
}

// Signer signs Transaction Tokens; *ca.CA satisfies it.
type Signer interface {
	SignTxnToken(ctx context.Context, p ca.TxnParams) (token string, issuedAt, expiresAt time.Time, err error)
}

// Store is where grants live; pkg/store/bolt's *Store satisfies it.
type Store = store.GrantStore

// EntryReader finds registration entries, for the rule that nobody
// approves their own request; pkg/store/bolt's *Store satisfies it.
type EntryReader interface {
	GetEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error)
}

// Config configures the grant service.
type Config struct {
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// Store keeps the grants. Required.
	Store Store
	// Policy decides. Nil means no policy is configured: every request
	// fails with ErrNoPolicy and nothing is stored.
	Policy Decider
	// Signer issues the Txn-Tokens. Required.
	Signer Signer
	// Log receives one line per decision. Defaults to discarding.
	Log *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_grant_* collectors.
	Metrics prometheus.Registerer
	// MaxTTL caps every grant; default 1h, at most grantreq.MaxMaxTTL.
	MaxTTL time.Duration
	// grantreq.Limits bounds requests; the zero value means grantreq.DefaultLimits().
	Limits grantreq.Limits
	// SweepEvery is how often Run marks expired grants; default 1m.
	SweepEvery time.Duration

	// ApprovalTimeout is how long a PENDING grant waits for its approvals
	// before it is DENIED ("approval timed out"); default 15m, between
	// MinApprovalTimeout and MaxApprovalTimeout.
	ApprovalTimeout time.Duration
	// Entries checks approvers against the subject's entries. Defaults to
	// Store when it is an EntryReader; without one, approvals are refused.
	Entries EntryReader
	// Reputation gives subjects' standing and takes the events grants
	// cause. Nil: every subject is at BaselineReputation, never
	// restricted, and no event is recorded.
	Reputation reputation.Tracker
	// Audit receives a record of every decision, approval and end.
	// Defaults to audit.Discard.
	Audit audit.Recorder
	// Notifier tells owners about grants waiting for their approval.
	// Defaults to notify.Discard.
	Notifier notify.Notifier
}

// Service decides grant requests and manages grants' lives. It is safe for
// concurrent use.
type Service struct {
	td      spiffeid.TrustDomain
	aud     string // the Txn-Token audience: the trust domain's SPIFFE ID
	iss     string // the Txn-Token issuer: the server's SPIFFE ID
	store   Store
	policy  Decider
	signer  Signer
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics
	maxTTL  time.Duration
	limits  grantreq.Limits
	sweep   time.Duration
	waiters *waiters

	approvalTimeout time.Duration
	entries         EntryReader
	reputation      reputation.Tracker // nil: not tracked
	audit           audit.Recorder
	notifier        notify.Notifier

	// recheck bounds a pending wait between two reads of the grant, in
	// case a change notification was missed; a test seam.
	recheck time.Duration
}

// New checks cfg and returns the service. Call Run for its lifetime.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Service{
		td:      cfg.TrustDomain,
		aud:     cfg.TrustDomain.ID().String(),
		iss:     agentid.Server(cfg.TrustDomain).String(),
		store:   cfg.Store,
		policy:  cfg.Policy,
		signer:  cfg.Signer,
		log:     cfg.Log.With(telemetry.Component, "grant"),
		clock:   cfg.Clock,
		metrics: newMetrics(cfg.Metrics),
		maxTTL:  cfg.MaxTTL,
		limits:  cfg.Limits,
		sweep:   cfg.SweepEvery,
		waiters: newWaiters(),
		recheck: 30 * time.Second,

		approvalTimeout: cfg.ApprovalTimeout,
		entries:         cfg.Entries,
		reputation:      cfg.Reputation,
		audit:           cfg.Audit,
		notifier:        cfg.Notifier,
	}, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("grant config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", "required")
	}
	if cfg.Store == nil {
		fail("Store", "required")
	}
	if cfg.Signer == nil {
		fail("Signer", "required")
	}
	switch {
	case cfg.MaxTTL == 0:
		cfg.MaxTTL = grantreq.DefaultMaxTTL
	case cfg.MaxTTL < time.Second || cfg.MaxTTL > grantreq.MaxMaxTTL:
		fail("MaxTTL", "%v is not between 1s and %v", cfg.MaxTTL, grantreq.MaxMaxTTL)
	}
	if cfg.Limits == (grantreq.Limits{}) {
		cfg.Limits = grantreq.DefaultLimits()
	}
	if err := cfg.Limits.Check(); err != nil {
		errs = append(errs, fmt.Errorf("grant config: %w", err))
	}
	switch {
	case cfg.SweepEvery == 0:
		cfg.SweepEvery = DefaultSweepEvery
	case cfg.SweepEvery < time.Second:
		fail("SweepEvery", "%v is shorter than 1s", cfg.SweepEvery)
	}
	switch {
	case cfg.ApprovalTimeout == 0:
		cfg.ApprovalTimeout = DefaultApprovalTimeout
	case cfg.ApprovalTimeout < MinApprovalTimeout || cfg.ApprovalTimeout > MaxApprovalTimeout:
		fail("ApprovalTimeout", "%v is not between %v and %v", cfg.ApprovalTimeout, MinApprovalTimeout, MaxApprovalTimeout)
	}
	if cfg.Entries == nil {
		if er, ok := cfg.Store.(EntryReader); ok {
			cfg.Entries = er
		}
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	cfg.Audit = audit.OrDiscard(cfg.Audit)
	cfg.Notifier = notify.OrDiscard(cfg.Notifier)
	return errors.Join(errs...)
}

// MaxTTL is the longest grant the service gives.
func (s *Service) MaxTTL() time.Duration { return s.maxTTL }

// ApprovalTimeout is how long a grant waits for approval.
func (s *Service) ApprovalTimeout() time.Duration { return s.approvalTimeout }

// Run follows grant changes for the pending waits and marks expired grants
// every SweepEvery, until ctx ends. It returns nil then.
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.follow(ctx)
	}()
	t := time.NewTicker(s.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-t.C:
			s.Sweep(ctx)
		}
	}
}
