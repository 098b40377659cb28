package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Backoff after failed refreshes: the first retry comes soon (a blip),
// later ones spread out so a partner that is down is not hammered.
const (
	minBackoff = 10 * time.Second
	maxBackoff = 5 * time.Minute
)

// BundleStore is what the refresher reads and writes; the store
// satisfies it.
type BundleStore interface {
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
	UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error)
}

// RefresherConfig configures a Refresher.
type RefresherConfig struct {
	// TrustDomain is the server's own. Required.
	TrustDomain spiffeid.TrustDomain
	// Relationships to refresh; each is checked (Relationship.Check) and
	// their trust domains must differ.
	Relationships []Relationship
	// Store keeps the fetched bundles. Required.
	Store BundleStore
	// Log defaults to discarding; Clock to the wall clock (it stamps the
	// status; waiting uses real timers).
	Log   *slog.Logger
	Clock clock.Clock
	// Metrics receives the refresh counters; nil registers nothing.
	Metrics prometheus.Registerer
}

// Status is how one relationship's refreshes went, as this server saw
// them.
type Status struct {
	Relationship Relationship
	// LastRefresh is the last successful refresh; zero if none yet.
	LastRefresh time.Time
	// LastError is the last failure's, cleared by a success.
	LastError string
	// NextRefresh is when the next fetch is due; zero while this server
	// does not refresh (Run is not running: another server leads).
	NextRefresh time.Time
}

// Refresher keeps the bundles of federated trust domains current from
// their bundle endpoints. Status is safe for concurrent use with Run.
type Refresher struct {
	cfg     RefresherConfig
	log     *slog.Logger
	rels    []*relState
	metrics refreshMetrics

	// Test seams: the bounds of the wait between refreshes.
	minInterval, minBackoff, maxBackoff time.Duration
}

// relState is one relationship's fetcher, bootstrap bundle and status.
type relState struct {
	fetcher   *fetcher
	bootstrap *typesv1.Bundle // nil without bootstrap_bundle

	mu     sync.Mutex
	status Status
}

// NewRefresher checks cfg and loads the bootstrap bundles and CA files,
// so that a mistake in them stops the server at start.
func NewRefresher(cfg RefresherConfig) (*Refresher, error) {
	var errs []error
	if cfg.TrustDomain.IsZero() {
		errs = append(errs, errors.New("federation: TrustDomain: required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("federation: Store: required"))
	}
	r := &Refresher{
		cfg: cfg, log: telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "federation"),
		metrics:     newRefreshMetrics(cfg.Metrics),
		minInterval: MinRefreshInterval, minBackoff: minBackoff, maxBackoff: maxBackoff,
	}
	r.cfg.Clock = clock.OrReal(cfg.Clock)
	for _, e := range CheckRelationships(cfg.TrustDomain, cfg.Relationships) {
		errs = append(errs, fmt.Errorf("federation: %w", e))
	}
	for i, rel := range cfg.Relationships {
		if len(rel.Check(cfg.TrustDomain)) > 0 {
			continue // reported above
		}
		st, err := newRelState(rel)
		if err != nil {
			errs = append(errs, fmt.Errorf("federation: Relationships[%d].%w", i, err))
			continue
		}
		r.rels = append(r.rels, st)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func newRelState(rel Relationship) (*relState, error) {
	f, err := newFetcher(rel)
	if err != nil {
		return nil, err
	}
	st := &relState{fetcher: f, status: Status{Relationship: rel}}
	if rel.BootstrapBundle != "" {
		if st.bootstrap, err = LoadBundleFile(rel.TrustDomain, rel.BootstrapBundle); err != nil {
			return nil, fmt.Errorf("BootstrapBundle: %w", err)
		}
	}
	return st, nil
}

// Status returns every relationship's status, in configuration order.
func (r *Refresher) Status() []Status {
	out := make([]Status, 0, len(r.rels))
	for _, st := range r.rels {
		st.mu.Lock()
		out = append(out, st.status)
		st.mu.Unlock()
	}
	return out
}

// Run stores the bootstrap bundles of trust domains without a stored
// bundle, then refreshes every relationship until ctx ends. Failures are
// logged, counted and retried with backoff; they keep the last good
// bundle. Run returns nil when ctx ends.
func (r *Refresher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, st := range r.rels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx, st)
		}()
	}
	wg.Wait()
	return nil
}

func (r *Refresher) loop(ctx context.Context, st *relState) {
	defer st.setNext(time.Time{})
	td := st.fetcher.rel.TrustDomain.Name()
	if err := r.seed(ctx, st); err != nil && ctx.Err() == nil {
		r.log.Warn("store bootstrap bundle", telemetry.TrustDomain, td, telemetry.Error, err.Error())
	}
	backoff := r.minBackoff
	for {
		var wait time.Duration
		if b, err := r.refresh(ctx, st); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = jitter(backoff, 0.2)
			backoff = min(backoff*2, r.maxBackoff)
		} else {
			backoff = r.minBackoff
			// Up to 10% early, so servers of many partners do not all
			// poll in step.
			wait = jitter(r.interval(b), 0.1)
		}
		st.setNext(r.cfg.Clock.Now().Add(wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// interval is RefreshInterval with the refresher's lower bound.
func (r *Refresher) interval(b *typesv1.Bundle) time.Duration {
	return boundedInterval(b, r.minInterval)
}

// jitter shortens d by up to frac of it, at random.
func jitter(d time.Duration, frac float64) time.Duration {
	return d - time.Duration(rand.Float64()*frac*float64(d))
}

// seed stores the bootstrap bundle when no bundle of the trust domain is
// stored; one stored meanwhile (by another server, or by hand) wins.
func (r *Refresher) seed(ctx context.Context, st *relState) error {
	if st.bootstrap == nil {
		return nil
	}
	td := st.fetcher.rel.TrustDomain.Name()
	_, err := r.cfg.Store.GetBundle(ctx, td)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	_, err = r.cfg.Store.UpdateBundle(ctx, td, func(b *typesv1.Bundle) error {
		if len(b.GetX509Authorities()) > 0 {
			return errUnchanged
		}
		setContent(b, st.bootstrap)
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err == nil {
		r.log.Info("stored the bootstrap bundle", telemetry.TrustDomain, td, telemetry.Path, st.fetcher.rel.BootstrapBundle)
	}
	return err
}

// errUnchanged aborts a bundle update that would store what is stored.
var errUnchanged = errors.New("bundle unchanged")

func setContent(dst, src *typesv1.Bundle) {
	dst.X509Authorities, dst.JwtAuthorities, dst.RefreshHint = src.X509Authorities, src.JwtAuthorities, src.RefreshHint
}

func (st *relState) setNext(t time.Time) {
	st.mu.Lock()
	st.status.NextRefresh = t
	st.mu.Unlock()
}
