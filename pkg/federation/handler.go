package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// DefaultCacheTTL is how long the endpoint serves its encoded document
// before it reads the stored bundle again: partners poll every few
// minutes at most, but many of them at once must not each cost a store
// read.
const DefaultCacheTTL = 5 * time.Second

// storeReadTimeout bounds the store read behind one refresh of the cache.
const storeReadTimeout = 5 * time.Second

// BundleGetter reads a stored bundle; the store satisfies it.
type BundleGetter interface {
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
}

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// TrustDomain is the server's own; its bundle is served. Required.
	TrustDomain spiffeid.TrustDomain
	// Bundles reads the stored bundle. Required.
	Bundles BundleGetter
	// RefreshHint is published as spiffe_refresh_hint; default
	// DefaultRefreshHint.
	RefreshHint time.Duration
	// CacheTTL is how long an encoded document is served before the store
	// is read again; default DefaultCacheTTL.
	CacheTTL time.Duration
	// Log defaults to discarding; Clock to the wall clock.
	Log   *slog.Logger
	Clock clock.Clock
	// Metrics receives nhid_federation_endpoint_requests_total; nil
	// registers nothing.
	Metrics prometheus.Registerer
}

// Handler serves the trust domain's bundle as a SPIFFE bundle document on
// GET (and HEAD) of "/". It is safe for concurrent use.
type Handler struct {
	cfg      HandlerConfig
	log      *slog.Logger
	requests *prometheus.CounterVec

	// mu is held across a cache refresh, so that concurrent requests
	// wait for one store read rather than each doing their own.
	mu     sync.Mutex
	doc    []byte
	seq    uint64
	readAt time.Time
}

// NewHandler checks cfg and returns the handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	var errs []error
	if cfg.TrustDomain.IsZero() {
		errs = append(errs, errors.New("bundle endpoint: TrustDomain: required"))
	}
	if cfg.Bundles == nil {
		errs = append(errs, errors.New("bundle endpoint: Bundles: required"))
	}
	if cfg.RefreshHint < 0 || cfg.CacheTTL < 0 {
		errs = append(errs, errors.New("bundle endpoint: RefreshHint and CacheTTL may not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.RefreshHint == 0 {
		cfg.RefreshHint = DefaultRefreshHint
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	h := &Handler{cfg: cfg, log: telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "federation")}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "federation", Name: "endpoint_requests_total",
		Help: "Requests to the bundle endpoint by HTTP status code.",
	}, []string{"code"})
	if cfg.Metrics != nil {
		h.requests = telemetry.RegisterOrExisting(cfg.Metrics, h.requests)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code := h.serve(w, r)
	h.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return http.StatusNotFound
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return http.StatusMethodNotAllowed
	}
	doc, err := h.Document(r.Context())
	if err != nil {
		http.Error(w, "bundle unavailable", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	// Partners must see a rotation at their next poll, not a cached copy.
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
	return http.StatusOK
}

// Document returns the encoded bundle document, read from the store at
// most once per CacheTTL and re-encoded only when the stored sequence
// number moved. When a store read fails, the last good document is
// served: the bundle it holds changes slowly and partners keep polling.
func (h *Handler) Document(ctx context.Context) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Clock.Now()
	if h.doc != nil && now.Sub(h.readAt) < h.cfg.CacheTTL {
		return h.doc, nil
	}
	ctx, cancel := context.WithTimeout(ctx, storeReadTimeout)
	defer cancel()
	b, err := h.cfg.Bundles.GetBundle(ctx, h.cfg.TrustDomain.Name())
	if err == nil && len(b.GetX509Authorities()) == 0 {
		err = errors.New("the stored bundle has no X.509 authority")
	}
	if err != nil {
		return h.stale(now, fmt.Errorf("read own bundle: %w", err))
	}
	if h.doc != nil && b.GetSequenceNumber() == h.seq {
		h.readAt = now
		return h.doc, nil
	}
	doc, err := Marshal(b, h.cfg.RefreshHint)
	if err != nil {
		return h.stale(now, fmt.Errorf("encode own bundle: %w", err))
	}
	h.doc, h.seq, h.readAt = doc, b.GetSequenceNumber(), now
	return doc, nil
}

// stale logs err and returns the last good document, if any, until the
// next CacheTTL: a failing store is not asked again at every request.
func (h *Handler) stale(now time.Time, err error) ([]byte, error) {
	if h.doc != nil {
		h.readAt = now
		h.log.Warn("bundle endpoint serves its last good document", telemetry.Error, err.Error())
		return h.doc, nil
	}
	h.log.Error("bundle endpoint has no document to serve", telemetry.Error, err.Error())
	return nil, err
}
