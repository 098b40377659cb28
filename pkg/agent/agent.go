// Package agent is nhid-agent: it attests the node to nhid-server, keeps
// the node's SVID renewed, syncs the entries authorised for the node into
// its on-disk cache, keeps an X.509-SVID ready for each, and serves them to
// local workloads on the SPIFFE Workload API socket, where it also serves
// nhid's Grant API (pkg/agent/grants).
//
// Readiness: the agent is ready once the Workload API is serving and the
// state it serves is trustworthy: either the first sync with the server
// in this run has completed, or the cache restored at start came from an
// earlier completed sync (it holds a revision and a bundle). The second
// case keeps a node's workloads served, and its readiness probe green,
// while the server is unreachable; the logs and the sync metrics
// (nhid_agent_sync_reconnects_total, nhid_agent_sync_revision) tell an
// operator that the server is not being reached.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/nhid/nhid/pkg/agent/agentsvid"
	"github.com/nhid/nhid/pkg/agent/entrysync"
	"github.com/nhid/nhid/pkg/agent/manager"
	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
)

// shutdownTimeout bounds the graceful stop of the Workload API and the
// health server.
const shutdownTimeout = 5 * time.Second

// Agent is nhid-agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	clock    clock.Clock
	reg      prometheus.Registerer
	gatherer prometheus.Gatherer
	metrics  *metrics

	svidSrc   *agentsvid.Source
	bundleSrc *trust.Source
	bundleMu  sync.Mutex // orders bundle updates from attestation, renewal and sync
	conn      *serverConn
	events    *eventReporter // workload events for the server (events.go)
	renewNow  chan struct{}  // test seam: renew at once
	connected chan struct{}  // closed on the first connection to the server
	connOnce  sync.Once

	cache   *agentcache.Cache
	manager *manager.Manager
	sync    *entrysync.Client

	started    atomic.Bool
	restored   atomic.Bool // the cache held a completed sync
	serving    atomic.Bool
	ready      chan struct{}
	synced     chan struct{}
	readyOnce  sync.Once
	healthAddr atomic.Pointer[net.Addr]
}

// New checks cfg and returns an agent. It creates the data dir but opens
// nothing else; Run does.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Metrics
	var gatherer prometheus.Gatherer = prometheus.Gatherers{}
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gatherer = r, r
	} else if g, ok := reg.(prometheus.Gatherer); ok {
		gatherer = g
	}
	warnLooseDataDir(cfg.DataDir, log)
	conn := newServerConn()
	events := newEventReporter(conn, reg, log)
	// Both the Workload API and the Grant API attest through this, so
	// attestation failures on either are reported.
	cfg.WorkloadAttestor = events.attestor(cfg.WorkloadAttestor)
	return &Agent{
		cfg:       cfg,
		log:       log,
		clock:     clock.OrReal(cfg.Clock),
		reg:       reg,
		gatherer:  gatherer,
		svidSrc:   &agentsvid.Source{},
		bundleSrc: &trust.Source{},
		conn:      conn,
		events:    events,
		renewNow:  make(chan struct{}, 1),
		connected: make(chan struct{}),
		ready:     make(chan struct{}),
		synced:    make(chan struct{}),
	}, nil
}

// SocketPath is the Workload API socket.
func (a *Agent) SocketPath() string { return a.cfg.SocketPath }

// Ready is closed once the agent is ready (see the package doc).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Synced is closed once the first sync with the server has completed in
// this run.
func (a *Agent) Synced() <-chan struct{} { return a.synced }

// HealthAddr is the address the health server listens on, once it does.
func (a *Agent) HealthAddr() net.Addr {
	if p := a.healthAddr.Load(); p != nil {
		return *p
	}
	return nil
}

// Run runs the agent until ctx ends or the node cannot go on (banned, or
// evicted without a way to attest again). It returns nil after a clean
// stop. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	if err := a.open(); err != nil {
		return err
	}
	defer a.closeCache()
	wl, err := a.startWorkloadAPI()
	if err != nil {
		return err
	}
	health, err := a.startHealth()
	if err != nil {
		a.stopWorkloadAPI(wl)
		return err
	}
	a.log.Info("nhid-agent running", telemetry.TrustDomain, a.cfg.TrustDomain.Name(),
		telemetry.Path, a.cfg.SocketPath, telemetry.Address, a.cfg.ServerAddress)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.manager.Run(gctx) })
	g.Go(func() error {
		// Syncing before the first connection would only log failures.
		select {
		case <-gctx.Done():
			return nil
		case <-a.connected:
		}
		return a.sync.Run(gctx)
	})
	g.Go(func() error { return a.runNode(gctx) })
	g.Go(func() error { a.runReattest(gctx); return nil })
	g.Go(func() error { a.watchReady(gctx); return nil })
	g.Go(func() error { a.events.run(gctx); return nil })
	err = g.Wait()

	a.stopHealth(health)
	a.stopWorkloadAPI(wl)
	if old := a.conn.swap(nil); old != nil {
		_ = old.Close()
	}
	if err != nil {
		return err
	}
	a.log.Info("nhid-agent stopped")
	return nil
}
