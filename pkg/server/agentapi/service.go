// Package agentapi is the server half of the agent API (proto
// nhid.agent.v1): node attestation, agent SVID renewal, the push-based entry
// Sync and SVID minting. It is the one place where agent-side errors become
// gRPC status codes, and it owns the agent-API authentication that runs
// after the TLS layer has verified the client certificate (AuthInterceptors).
package agentapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Defaults for the zero values of Config.
const (
	DefaultAgentSVIDTTL     = time.Hour
	DefaultX509TTL          = time.Hour
	DefaultJWTTTL           = 5 * time.Minute
	DefaultSnapshotPageSize = 1000
	// MaxSnapshotPageSize bounds the page_size an agent may ask for.
	MaxSnapshotPageSize = 10000
	// MaxMintBatch is the most X.509-SVIDs one MintX509SVIDs call may ask for.
	MaxMintBatch = 500
)

// Store is what the agent API needs from the server store.
// pkg/store/bolt's *Store satisfies it.
type Store interface {
	GetEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	ListEntriesByParent(ctx context.Context, parentIDs []string) ([]*typesv1.Entry, int64, error)
	EntryChangesSince(ctx context.Context, rev int64) ([]*typesv1.Entry, []string, int64, error)
	GetNode(ctx context.Context, spiffeID string) (*typesv1.Node, error)
	CreateNode(ctx context.Context, n *typesv1.Node) (*typesv1.Node, error)
	UpdateNode(ctx context.Context, spiffeID string, fn func(*typesv1.Node) error) (*typesv1.Node, error)
	ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Node, string, error)
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
	ListBundles(ctx context.Context) ([]*typesv1.Bundle, error)
	RecordIssued(ctx context.Context, rows []*typesv1.IssuedSVID) error
	Watch(ctx context.Context) (<-chan store.Event, error)
	Revision(ctx context.Context) (int64, error)
}

// Signer issues SVIDs; *ca.CA satisfies it.
type Signer interface {
	SignX509SVID(ctx context.Context, p ca.X509Params) ([]*x509.Certificate, error)
	SignJWTSVID(ctx context.Context, p ca.JWTParams) (token string, issuedAt, expiresAt time.Time, err error)
}

// Config configures the agent API.
type Config struct {
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// Store holds entries, nodes, the bundle and the ledger. Required.
	Store Store
	// CA signs agent and workload SVIDs. Required.
	CA Signer
	// Verifiers are the node attestors agents may use. At least one.
	Verifiers []attestor.NodeVerifier
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_agentapi_* collectors.
	Metrics prometheus.Registerer
	// AgentSVIDTTL is the agent SVID lifetime; default 1h.
	AgentSVIDTTL time.Duration
	// DefaultX509TTL applies to entries without x509_ttl; default 1h.
	DefaultX509TTL time.Duration
	// DefaultJWTTTL applies to entries without jwt_ttl; default 5m.
	DefaultJWTTTL time.Duration
	// MaxJWTTTL caps every JWT-SVID; default entry.DefaultLimits().MaxJWTTTL.
	MaxJWTTTL time.Duration
	// SnapshotPageSize is the Sync page size when the agent asks for none;
	// default 1000.
	SnapshotPageSize int
	// SyncReads bounds the Sync streams reading a snapshot or resume at
	// once, and SyncQueue those waiting for a turn; more are refused with
	// a retry-after hint (syncgate.go). 0 takes DefaultSyncReads and
	// DefaultSyncQueue.
	SyncReads, SyncQueue int
	// Grants, if set, serves AgentGrantService (grants.go); without it
	// only ReportWorkloadEvents is served and the other methods answer
	// Unimplemented.
	Grants Grants
	// Audit receives the records of node attestations, trust changes,
	// SVID mints and the workload events agents report (records.go,
	// events.go); default audit.Discard.
	Audit audit.Recorder
	// Reputation, if set, is told of attestation failures: a node's
	// refused re-attestation and the workload events naming an identity
	// the node serves. Nil tracks none.
	Reputation reputation.Tracker
}

// Service implements agentv1.AgentServiceServer.
type Service struct {
	agentv1.UnimplementedAgentServiceServer

	cfg       Config
	td        spiffeid.TrustDomain
	serverID  string
	store     Store
	ca        Signer
	verifiers map[string]attestor.NodeVerifier
	known     string // sorted verifier types, for error messages
	log       *slog.Logger
	clock     clock.Clock
	metrics   *metrics
	tracker   *tracker
	bundles   *servertls.Bundles

	// reattesters are the verifiers that attest connected nodes again
	// (continuous attestation; reattest*.go), by type.
	reattesters map[string]attestor.NodeReattester
	hub         *reattestHub
	sched       *scheduler
	// sweepEvery is the period of the overdue sweep; a test seam.
	sweepEvery time.Duration

	// attestTimeout bounds a whole attestation; a test seam.
	attestTimeout time.Duration

	// attestSlots bounds concurrent attestations: Attest is the one
	// unauthenticated call, so it must not be able to exhaust the server.
	attestSlots chan struct{}
	// syncGate bounds the Sync streams reading at once (syncgate.go).
	syncGate *syncGate

	// audit takes the service's audit records; attestFailures bounds the
	// records of failed attestations (records.go).
	audit          audit.Recorder
	attestFailures *rate.Limiter
	// events rate-limits the workload events each node reports (events.go).
	events *eventLimits

	// stopping is closed when Run returns, ending open Sync streams.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

var _ agentv1.AgentServiceServer = (*Service)(nil)

// New checks cfg and builds the service. Call Run for the service's
// lifetime: Sync resumes rely on the change tracking it does.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:            cfg,
		td:             cfg.TrustDomain,
		store:          cfg.Store,
		ca:             cfg.CA,
		verifiers:      make(map[string]attestor.NodeVerifier, len(cfg.Verifiers)),
		log:            cfg.Log.With(telemetry.Component, "agentapi"),
		clock:          cfg.Clock,
		metrics:        newMetrics(cfg.Metrics),
		tracker:        newTracker(),
		reattesters:    make(map[string]attestor.NodeReattester),
		hub:            newReattestHub(),
		attestTimeout:  maxAttestDuration,
		stopping:       make(chan struct{}),
		attestSlots:    make(chan struct{}, maxConcurrentAttestations),
		syncGate:       newSyncGate(cfg.SyncReads, cfg.SyncQueue, cfg.Metrics),
		audit:          cfg.Audit,
		attestFailures: rate.NewLimiter(attestFailureRecordRate, attestFailureRecordBurst),
		events:         newEventLimits(workloadEventRate, workloadEventBurst),
	}
	s.serverID = agentid.Server(cfg.TrustDomain).String()
	s.bundles = servertls.NewBundles(cfg.Store, cfg.TrustDomain, cfg.Clock)
	types := make([]string, 0, len(cfg.Verifiers))
	for i, v := range cfg.Verifiers {
		if v == nil || v.Type() == "" {
			return nil, fmt.Errorf("agentapi config: Verifiers[%d]: nil or without a type", i)
		}
		if _, dup := s.verifiers[v.Type()]; dup {
			return nil, fmt.Errorf("agentapi config: Verifiers[%d]: type %q listed twice", i, v.Type())
		}
		s.verifiers[v.Type()] = v
		types = append(types, v.Type())
		if err := s.addReattester(i, v); err != nil {
			return nil, err
		}
	}
	sort.Strings(types)
	s.known = strings.Join(types, ", ")
	s.sched = newScheduler(s)
	return s, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	fail := func(field, msg string) { errs = append(errs, fmt.Errorf("agentapi config: %s: %s", field, msg)) }
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", "required")
	}
	if cfg.Store == nil {
		fail("Store", "required")
	}
	if cfg.CA == nil {
		fail("CA", "required")
	}
	if len(cfg.Verifiers) == 0 {
		fail("Verifiers", "at least one node attestor is required")
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"AgentSVIDTTL", &cfg.AgentSVIDTTL, DefaultAgentSVIDTTL},
		{"DefaultX509TTL", &cfg.DefaultX509TTL, DefaultX509TTL},
		{"DefaultJWTTTL", &cfg.DefaultJWTTTL, DefaultJWTTTL},
		{"MaxJWTTTL", &cfg.MaxJWTTTL, entry.DefaultLimits().MaxJWTTTL},
	}
	for _, d := range durations {
		switch {
		case *d.d == 0:
			*d.d = d.def
		case *d.d < time.Second:
			fail(d.name, fmt.Sprintf("%v is shorter than 1s", *d.d))
		}
	}
	if cfg.DefaultJWTTTL > cfg.MaxJWTTTL {
		fail("DefaultJWTTTL", fmt.Sprintf("%v exceeds MaxJWTTTL %v", cfg.DefaultJWTTTL, cfg.MaxJWTTTL))
	}
	switch {
	case cfg.SnapshotPageSize == 0:
		cfg.SnapshotPageSize = DefaultSnapshotPageSize
	case cfg.SnapshotPageSize < 0 || cfg.SnapshotPageSize > MaxSnapshotPageSize:
		fail("SnapshotPageSize", fmt.Sprintf("%d is not between 1 and %d", cfg.SnapshotPageSize, MaxSnapshotPageSize))
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	cfg.Audit = audit.OrDiscard(cfg.Audit)
	return errors.Join(errs...)
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	agentv1.RegisterAgentServiceServer(r, s)
	if s.cfg.Grants != nil {
		agentv1.RegisterAgentGrantServiceServer(r, &grantService{s: s, grants: s.cfg.Grants})
	} else {
		// Workload events are reported whether or not grants are served.
		agentv1.RegisterAgentGrantServiceServer(r, &eventsOnlyService{s: s})
	}
}

// Run tracks the store changes Sync resumes depend on (alias entries and
// node selectors) until ctx ends. Until Run has subscribed, every resume
// falls back to a full snapshot, which is always correct. When Run returns,
// open Sync streams end with Unavailable, so that a graceful stop of the
// gRPC server does not wait for streams that never finish on their own.
// Run also schedules the continuous attestation of connected nodes
// (reattest_sched.go).
func (s *Service) Run(ctx context.Context) error {
	defer s.stoppingOnce.Do(func() { close(s.stopping) })
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.tracker.run(ctx, s.store, s.td, s.log) })
	g.Go(func() error { return s.sched.run(ctx) })
	return g.Wait()
}
