// Package manager is nhid-agent's SVID manager: it holds the entries synced
// from the server, keeps an X.509-SVID for each (keys made on the node,
// CSRs minted by the server in batches, rotated at about half life), and
// implements the Workload API's workloadapi.Manager on top: selector
// matching, subscriptions pushed on every change, the bundles of the
// federated trust domains each workload's entries name, and JWT-SVIDs
// minted on demand and cached.
//
// Pre-minted SVIDs are bounded: beyond MaxPreMintedSVIDs, SVIDs are minted
// when a workload asks for them and the least recently used unpinned ones
// are dropped.
package manager

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/agent/keys"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// Defaults and limits.
const (
	// DefaultMaxPreMintedSVIDs bounds the SVIDs held when the config says 0.
	DefaultMaxPreMintedSVIDs = 10000
	// MaxBatch is the most CSRs the server signs in one MintX509SVIDs call.
	MaxBatch = 500
	// mintTimeout bounds one mint call; a workload waiting for an
	// on-demand SVID waits at most about this long.
	mintTimeout = 20 * time.Second
	// maxBackoff caps the wait between failed mint attempts.
	maxBackoff = 30 * time.Second
	minBackoff = 500 * time.Millisecond
	// minRotateGap is the least time between two mints of one SVID.
	minRotateGap = 5 * time.Second
	// maxIdleParsed bounds the SVIDs that keep their parsed form while no
	// subscription holds them (see svid.parsed).
	maxIdleParsed = 256
)

var _ workloadapi.Manager = (*Manager)(nil)

// Minter is the part of the agent API the manager calls. The agent's
// connection to the server implements it.
type Minter interface {
	MintX509SVIDs(ctx context.Context, in *agentv1.MintX509SVIDsRequest, opts ...grpc.CallOption) (*agentv1.MintX509SVIDsResponse, error)
	MintJWTSVID(ctx context.Context, in *agentv1.MintJWTSVIDRequest, opts ...grpc.CallOption) (*agentv1.MintJWTSVIDResponse, error)
}

// SVIDStore persists minted SVIDs; *agentcache.Cache implements it.
type SVIDStore interface {
	PutSVIDs(svids []agentcache.SVID) (int, error)
	DeleteSVIDs(entryIDs []string) error
}

// Config configures New.
type Config struct {
	// TrustDomain is the agent's trust domain; required.
	TrustDomain spiffeid.TrustDomain
	// Minter signs SVIDs; required.
	Minter Minter
	// Store persists SVIDs; nil keeps them in memory only.
	Store SVIDStore
	// KeyType of workload keys (keys.Types()); default keys.Default.
	KeyType string
	// MaxPreMintedSVIDs bounds the SVIDs held; 0 means the default.
	MaxPreMintedSVIDs int
	Log               *slog.Logger
	Clock             clock.Clock
	// Metrics registers the manager's metrics; nil registers nowhere.
	Metrics prometheus.Registerer
}

// Manager is the SVID manager. It is safe for concurrent use.
type Manager struct {
	td      spiffeid.TrustDomain
	minter  Minter
	store   SVIDStore
	keyType string
	maxSVID int
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics

	wake    chan struct{}
	jwtMint singleflight.Group

	mu      sync.Mutex
	entries map[string]*record
	index   index
	lru     *list.List // of *record holding an SVID; front = most recently used
	idle    *list.List // of unpinned *record whose SVID is parsed; front = most recently used
	maxIdle int        // bound on idle; maxIdleParsed but in tests
	bundle  *spiffebundle.Bundle
	// federated holds federated trust domains' bundles by trust domain name.
	federated map[string]fedBundle
	// bundleGen, fedGen and seq number bundles, federated bundles and
	// SVIDs for Update keys.
	bundleGen uint64
	fedGen    uint64
	seq       uint64
	subs      map[*subscription]struct{}
	jwts      map[string]jwtToken
	// backoffUntil and failures pace mint calls after the server failed.
	backoffUntil time.Time
	failures     int
	// attempted is closed and replaced after every mint attempt, so that
	// callers waiting for on-demand SVIDs can wait without polling.
	attempted chan struct{}
}

// New checks cfg and returns a manager holding no entries.
func New(cfg Config) (*Manager, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("manager: trust domain is required")
	}
	if cfg.Minter == nil {
		return nil, errors.New("manager: minter is required")
	}
	if cfg.KeyType == "" {
		cfg.KeyType = keys.Default
	}
	if err := keys.Check(cfg.KeyType); err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	switch {
	case cfg.MaxPreMintedSVIDs < 0:
		return nil, fmt.Errorf("manager: max pre-minted SVIDs %d is negative", cfg.MaxPreMintedSVIDs)
	case cfg.MaxPreMintedSVIDs == 0:
		cfg.MaxPreMintedSVIDs = DefaultMaxPreMintedSVIDs
	}
	met, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		td:        cfg.TrustDomain,
		minter:    cfg.Minter,
		store:     cfg.Store,
		keyType:   cfg.KeyType,
		maxSVID:   cfg.MaxPreMintedSVIDs,
		log:       log,
		clock:     clock.OrReal(cfg.Clock),
		metrics:   met,
		wake:      make(chan struct{}, 1),
		entries:   make(map[string]*record),
		index:     make(index),
		lru:       list.New(),
		idle:      list.New(),
		maxIdle:   maxIdleParsed,
		subs:      make(map[*subscription]struct{}),
		jwts:      make(map[string]jwtToken),
		attempted: make(chan struct{}),
	}, nil
}

// Run mints, rotates and expires SVIDs until ctx ends. Minting failures
// are logged and retried with backoff; Run returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		batch, next := m.plan()
		if len(batch) > 0 {
			m.mintBatch(ctx, batch)
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(m.clock.Now()), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// RetryNow ends any wait after failed mints, for when the connection to
// the server has just been (re-)established.
func (m *Manager) RetryNow() {
	m.mu.Lock()
	m.backoffUntil, m.failures = time.Time{}, 0
	for _, r := range m.entries {
		r.retryAt, r.failures = time.Time{}, 0
	}
	m.mu.Unlock()
	m.kick()
}

// kick wakes Run to look for work.
func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// HasBundle reports whether the manager knows the trust bundle, without
// which it serves nothing.
func (m *Manager) HasBundle() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bundle != nil
}

// SetBundle replaces the trust bundle served to workloads. b must not be
// modified afterwards.
func (m *Manager) SetBundle(b *spiffebundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bundle != nil && m.bundle.Equal(b) {
		return
	}
	m.bundle = b
	m.bundleGen++
	m.notifyLocked()
}

// Counts returns the number of cached entries and of SVIDs held.
func (m *Manager) Counts() (entries, svids int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries), m.lru.Len()
}
