// Package entrysync is nhid-agent's sync client: it keeps a Sync stream
// open to the server, applies what arrives (snapshots, resumes, changes,
// bundle, federated bundles) to the on-disk cache and then to the SVID
// manager, and reconnects with exponential backoff and jitter when the
// stream breaks, resuming from the last revision it persisted.
package entrysync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Reconnect backoff bounds.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Syncer opens Sync streams; the agent's server connection implements it.
type Syncer interface {
	Sync(ctx context.Context, in *agentv1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[agentv1.SyncResponse], error)
}

// Cache persists applied changes; *agentcache.Cache implements it.
type Cache interface {
	Apply(agentcache.Change) error
}

// Target receives applied changes once persisted: the SVID manager.
type Target interface {
	ApplyEntries(upserts []*typesv1.Entry, deletedIDs []string)
	SetBundle(*spiffebundle.Bundle)
	// SetFederatedBundles replaces the federated bundles with a complete
	// set; an empty one clears them.
	SetFederatedBundles([]*spiffebundle.Bundle)
}

// Config configures New.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Syncer      Syncer
	Cache       Cache
	Target      Target
	// Initial is the state loaded from the cache; nil for none.
	Initial *agentcache.State
	// OnBundle, if set, is called with every new bundle once persisted
	// (the agent refreshes its TLS trust and bundle.pem with it).
	OnBundle func(*spiffebundle.Bundle)
	Log      *slog.Logger
	Clock    clock.Clock
	Metrics  prometheus.Registerer
}

// Client is the sync client.
type Client struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	applier *applier
	synced  chan struct{}
	once    sync.Once
	kick    chan struct{}
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("entry sync: trust domain is required")
	case cfg.Syncer == nil:
		return nil, errors.New("entry sync: syncer is required")
	case cfg.Cache == nil:
		return nil, errors.New("entry sync: cache is required")
	case cfg.Target == nil:
		return nil, errors.New("entry sync: target is required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	met, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("entry sync: %w", err)
	}
	return &Client{
		cfg:     cfg,
		log:     log,
		metrics: met,
		applier: newApplier(cfg.TrustDomain, log, cfg.Initial),
		synced:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}, nil
}

// Synced is closed once the first snapshot or resume has been applied.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// RetryNow ends a reconnect wait at once, for when the connection to the
// server has just been re-established.
func (c *Client) RetryNow() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run keeps a Sync stream open until ctx ends, then returns nil.
func (c *Client) Run(ctx context.Context) error {
	failures := 0
	for {
		progressed, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			failures = 0
		}
		failures++
		wait := backoff(failures)
		var busy *busyError
		if errors.As(err, &busy) {
			// The server asked for a pause: come back no sooner, so that a
			// reconnect storm drains instead of hammering it.
			wait = max(wait, busy.retryAfter)
		}
		c.metrics.reconnects.Inc()
		c.log.Warn("entry sync stream ended; reconnecting",
			"retry_in", wait.Round(time.Millisecond), telemetry.Error, err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-c.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// stream runs one Sync call until it fails. progressed says whether any
// message was applied, which resets the backoff.
func (c *Client) stream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.applier.restart()
	since := c.applier.sinceRevision()
	st, err := c.cfg.Syncer.Sync(ctx, &agentv1.SyncRequest{SinceRevision: since})
	if err != nil {
		return false, fmt.Errorf("open sync stream: %w", err)
	}
	c.log.Debug("entry sync stream open", telemetry.Revision, since)
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, errors.New("server closed the sync stream")
		}
		if err != nil {
			return progressed, withRetryHint(fmt.Errorf("receive sync message: %w", err), st.Trailer())
		}
		if err := c.handle(msg); err != nil {
			return progressed, err
		}
		progressed = true
	}
}

// handle applies one message: to the cache first, so that what workloads
// are served never runs ahead of what a restart would resume from.
func (c *Client) handle(msg *agentv1.SyncResponse) error {
	out, err := c.applier.apply(msg)
	if err != nil {
		return err
	}
	var persistErr error
	if !isEmpty(out.change) {
		persistErr = c.cfg.Cache.Apply(out.change)
		c.applier.persisted(out.change, persistErr)
		if persistErr != nil {
			c.log.Error("writing synced entries to the agent cache failed; serving them from memory and resyncing",
				telemetry.Error, persistErr)
		}
	}
	if out.bundle != nil {
		c.cfg.Target.SetBundle(out.bundle)
		if c.cfg.OnBundle != nil {
			c.cfg.OnBundle(out.bundle)
		}
	}
	// Federated bundles before entries: an entry that starts federating in
	// the same message reaches workloads with its bundles in one Update.
	if out.federatedSet {
		c.cfg.Target.SetFederatedBundles(out.federated)
	}
	if len(out.upserts) > 0 || len(out.deleted) > 0 {
		c.cfg.Target.ApplyEntries(out.upserts, out.deleted)
	}
	c.metrics.messages.Inc()
	if out.change.Revision != 0 {
		c.metrics.revision.Set(float64(out.change.Revision))
	}
	if out.done {
		c.once.Do(func() {
			c.log.Info("entries synced", telemetry.Revision, c.applier.revision, telemetry.Count, len(c.applier.held))
			close(c.synced)
		})
	}
	if persistErr != nil {
		// Resync from scratch so the cache is rewritten whole.
		return fmt.Errorf("persist sync message: %w", persistErr)
	}
	return nil
}

func isEmpty(ch agentcache.Change) bool {
	return !ch.Reset && len(ch.Upserts) == 0 && len(ch.DeletedIDs) == 0 && ch.Revision == 0 && ch.Bundle == nil &&
		!ch.FederatedBundlesSet
}

// backoff is the wait after n consecutive failed streams: exponential
// from minBackoff to maxBackoff, with ±20% jitter so that the agents of a
// cluster do not reconnect in lockstep after a server restart.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

type metrics struct {
	reconnects prometheus.Counter
	messages   prometheus.Counter
	revision   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "sync_reconnects_total",
			Help: "Times the entry sync stream broke and was opened again.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "sync_messages_total",
			Help: "Sync messages applied.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "agent", Name: "sync_revision",
			Help: "The store revision of the entries the agent holds.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.reconnects, m.messages, m.revision} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
