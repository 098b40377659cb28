// Package adminapi serves nhid's operator API (proto nhid.admin.v1): entries,
// nodes, join tokens and the trust bundle. It is the one place where errors
// on the admin side become gRPC status codes, and the place every admin
// change is written to the audit log.
//
// The API is served on a Unix socket; AuthorizePeer decides from the kernel's
// peer credentials who may call it.
package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/jointoken"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Token lifetime defaults.
const (
	DefaultTokenTTL = 10 * time.Minute
	MaxTokenTTL     = 7 * 24 * time.Hour
)

// EntryStore is the part of store.EntryStore the entry service uses.
type EntryStore interface {
	CreateEntries(ctx context.Context, entries []*typesv1.Entry) ([]*typesv1.Entry, []error, error)
	UpdateEntry(ctx context.Context, e *typesv1.Entry) (*typesv1.Entry, error)
	DeleteEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	GetEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error)
}

// NodeStore is the part of store.NodeStore the node service uses.
type NodeStore interface {
	GetNode(ctx context.Context, spiffeID string) (*typesv1.Node, error)
	ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Node, string, error)
	UpdateNode(ctx context.Context, spiffeID string, fn func(*typesv1.Node) error) (*typesv1.Node, error)
}

// TokenStore is the part of store.TokenStore the join token service uses.
type TokenStore interface {
	CreateJoinToken(ctx context.Context, t *typesv1.JoinToken) error
	ListJoinTokens(ctx context.Context) ([]*typesv1.JoinToken, error)
	DeleteJoinToken(ctx context.Context, id string) error
}

// BundleStore is the part of store.BundleStore the bundle and federation
// services use.
type BundleStore interface {
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
	UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error)
	ListBundles(ctx context.Context) ([]*typesv1.Bundle, error)
	DeleteBundle(ctx context.Context, trustDomain string) error
}

// Store is everything the admin API reads and writes; the bbolt store
// (pkg/store/bolt) satisfies it.
type Store interface {
	EntryStore
	NodeStore
	TokenStore
	BundleStore
}

// Config configures the admin API.
type Config struct {
	// TrustDomain is the server's trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	// Store persists everything. Required.
	Store Store
	// Log receives the audit lines of successful changes and internal
	// errors. Defaults to discarding.
	Log *slog.Logger
	// Clock stamps tokens and entries. Defaults to the wall clock.
	Clock clock.Clock
	// Limits bound entry TTLs. The zero value means entry.DefaultLimits().
	Limits entry.Limits
	// DefaultTokenTTL is the lifetime of a join token generated with ttl 0.
	// Default 10 minutes.
	DefaultTokenTTL time.Duration
	// MaxTokenTTL is the longest join token lifetime allowed. Default 7 days.
	MaxTokenTTL time.Duration
	// Grants, if set, serves GrantService (grants.go).
	Grants Grants
	// Ledger, if set, serves SVIDService (svids.go).
	Ledger Ledger
	// Approvals, if set, serves ApprovalService (approvals.go).
	Approvals Approvals
	// Reputation, if set, serves ReputationService (reputation.go).
	Reputation Reputations
	// Audit receives a record of every admin change (errors.go); default
	// audit.Discard.
	Audit audit.Recorder
	// AuditLog, if set, serves AuditService (audit.go).
	AuditLog AuditLog
	// Federation, if set, reports the federation relationships' status
	// (federation.go); without it none are listed.
	Federation FederationStatus
	// BundleRefreshHint is the spiffe_refresh_hint the bundle endpoint
	// publishes, so GetBundle's document is the endpoint's; 0 means
	// federation.DefaultRefreshHint.
	BundleRefreshHint time.Duration
}

// Service implements the four admin services over one store.
type Service struct {
	td          spiffeid.TrustDomain
	store       Store
	log         *slog.Logger
	clock       clock.Clock
	limits      entry.Limits
	tokenTTL    time.Duration
	maxTTL      time.Duration
	grants      Grants
	ledger      Ledger
	approvals   Approvals
	reputations Reputations
	recorder    audit.Recorder
	auditLog    AuditLog
	federation  FederationStatus
	// bundleHint is the refresh hint of GetBundle's document.
	bundleHint time.Duration

	// generateToken makes join tokens; a seam so tests can force an id
	// collision.
	generateToken func() (jointoken.Token, error)
}

// New checks cfg and returns the admin API.
func New(cfg Config) (*Service, error) {
	if err := fillDefaults(&cfg); err != nil {
		return nil, fmt.Errorf("admin api: %w", err)
	}
	return &Service{
		td:            cfg.TrustDomain,
		store:         cfg.Store,
		log:           cfg.Log,
		clock:         cfg.Clock,
		limits:        cfg.Limits,
		tokenTTL:      cfg.DefaultTokenTTL,
		maxTTL:        cfg.MaxTokenTTL,
		grants:        cfg.Grants,
		ledger:        cfg.Ledger,
		approvals:     cfg.Approvals,
		reputations:   cfg.Reputation,
		recorder:      audit.OrDiscard(cfg.Audit),
		auditLog:      cfg.AuditLog,
		federation:    cfg.Federation,
		bundleHint:    cfg.BundleRefreshHint,
		generateToken: jointoken.Generate,
	}, nil
}

func fillDefaults(cfg *Config) error {
	var errs []error
	if cfg.TrustDomain.IsZero() {
		errs = append(errs, errors.New("trust domain is required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("store is required"))
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Limits == (entry.Limits{}) {
		cfg.Limits = entry.DefaultLimits()
	}
	if err := cfg.Limits.Check(); err != nil {
		errs = append(errs, err)
	}
	if cfg.DefaultTokenTTL == 0 {
		cfg.DefaultTokenTTL = DefaultTokenTTL
	}
	if cfg.MaxTokenTTL == 0 {
		cfg.MaxTokenTTL = MaxTokenTTL
	}
	switch {
	case cfg.DefaultTokenTTL < time.Second:
		errs = append(errs, fmt.Errorf("default token TTL %v is below 1s", cfg.DefaultTokenTTL))
	case cfg.MaxTokenTTL < cfg.DefaultTokenTTL:
		errs = append(errs, fmt.Errorf("maximum token TTL %v is below the default %v", cfg.MaxTokenTTL, cfg.DefaultTokenTTL))
	case cfg.MaxTokenTTL > time.Duration(1<<31-1)*time.Second:
		errs = append(errs, fmt.Errorf("maximum token TTL %v does not fit in int32 seconds", cfg.MaxTokenTTL))
	}
	return errors.Join(errs...)
}

// Register adds the entry, node, join token, bundle and federation
// services to r, and the grant and SVID services when their dependencies
// are configured.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	adminv1.RegisterEntryServiceServer(r, &entryService{s: s})
	adminv1.RegisterNodeServiceServer(r, &nodeService{s: s})
	adminv1.RegisterJoinTokenServiceServer(r, &tokenService{s: s})
	adminv1.RegisterBundleServiceServer(r, &bundleService{s: s})
	adminv1.RegisterFederationServiceServer(r, &federationService{s: s})
	if s.grants != nil {
		adminv1.RegisterGrantServiceServer(r, &grantService{s: s})
	}
	if s.ledger != nil {
		adminv1.RegisterSVIDServiceServer(r, &svidService{s: s})
	}
	if s.auditLog != nil {
		adminv1.RegisterAuditServiceServer(r, &auditService{s: s})
	}
	if s.approvals != nil {
		adminv1.RegisterApprovalServiceServer(r, &approvalService{s: s})
	}
	if s.reputations != nil {
		adminv1.RegisterReputationServiceServer(r, &reputationService{s: s})
	}
}
