// Package ca is nhid-server's certificate authority: it owns the X.509
// signing CA and the JWT signing key of one server, keeps them on disk,
// rotates them, publishes their trust anchors in the store's bundle, and
// signs X.509-SVIDs and JWT-SVIDs.
//
// Rotation follows one schedule for both kinds of key. At half of the
// active key's life the next key is created and its trust anchor published,
// so agents trust it before it signs anything; at 5/6 it becomes active; a
// retired key stays published until it expires, because everything it
// signed expires no later than it does (SVID lifetimes are capped by the
// signer's). Several servers may share one bundle: a CA only ever adds or
// removes its own authorities.
package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Defaults for the zero values of Config.
const (
	DefaultTTL = 24 * time.Hour
	// MinTTL keeps the rotation schedule (events at 1/2 and 5/6 of the life)
	// meaningfully longer than the clock skew SVIDs are backdated for.
	MinTTL = 10 * time.Minute
)

// defaultSubject is the CA subject used when Config.Subject is empty.
func defaultSubject() pkix.Name {
	return pkix.Name{Organization: []string{"nhid"}, CommonName: "nhid CA"}
}

// BundleStore is what the CA needs from the store: a transactional update
// of one trust domain's bundle. pkg/store/bolt's *Store satisfies it.
type BundleStore interface {
	// UpdateBundle applies fn to the stored bundle (an empty one if none)
	// in one transaction; fn returning an error aborts with that error.
	UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error)
}

// Config configures a CA. KeyType, JWTKeyType, TTL, Subject and the
// upstream apply to keys made from then on: changing them takes effect at
// the next rotation, never by replacing a key that agents already trust.
// JWT keys live as long as CA certificates (TTL).
type Config struct {
	// TrustDomain is the trust domain the CA signs for. Required.
	TrustDomain spiffeid.TrustDomain
	// Dir holds the keys, certificates and rotation state; it is created
	// with mode 0700. Required.
	Dir string
	// KeyType of the X.509 CA keys; default ec-p256.
	KeyType svid.KeyType
	// JWTKeyType of the JWT signing keys; default ec-p256 (ES256).
	JWTKeyType svid.KeyType
	// TTL is the lifetime of each CA certificate and JWT key; default 24h.
	TTL time.Duration
	// Subject of the CA certificates; default O=nhid, CN=nhid CA.
	Subject pkix.Name
	// UpstreamCertFile and UpstreamKeyFile, if set, make the CA an
	// intermediate signed by this upstream CA. The cert file is PEM: the
	// upstream signing certificate first, then its chain up to and
	// including a self-signed root. The roots go in the bundle; the
	// certificates between them and the CA travel with every SVID. Both
	// files are read again whenever a new CA is prepared, so the upstream
	// can be renewed on disk without a restart.
	UpstreamCertFile string
	UpstreamKeyFile  string
	// Bundles is where the trust anchors are published. Required.
	Bundles BundleStore
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Metrics, if set, receives the nhid_ca_* collectors.
	Metrics prometheus.Registerer
}

// CA is one server's certificate authority. Its methods are safe for
// concurrent use; signing never touches the disk or the store.
type CA struct {
	cfg     Config
	td      spiffeid.TrustDomain
	clock   clock.Clock
	log     *slog.Logger
	metrics *metrics
	files   *fileStore

	// tick bounds the wait between two Rotate calls in Run; a test seam.
	tick time.Duration

	// mu serialises rotation bookkeeping; state is only used under it.
	mu    sync.Mutex
	state state

	// view is what signing and the accessors read, replaced as a whole
	// after every state change so that signing takes no lock.
	view atomic.Pointer[view]

	// txn signs Transaction Tokens with the active JWT key (see txn.go).
	txn atomic.Pointer[txnSigner]
}

// New loads the CA persisted in cfg.Dir, or creates one, and makes sure the
// store's bundle holds this CA's current authorities. A state directory that
// exists but cannot be read is an error, never a reason to start over.
func New(ctx context.Context, cfg Config) (_ *CA, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.unregister(cfg.Metrics) // so that a corrected retry can register
		}
	}()
	log := cfg.Log.With(telemetry.Component, "ca", telemetry.TrustDomain, cfg.TrustDomain.Name())
	c := &CA{
		cfg:     cfg,
		td:      cfg.TrustDomain,
		clock:   cfg.Clock,
		log:     log,
		metrics: m,
		files:   &fileStore{dir: cfg.Dir, log: log},
		tick:    time.Minute,
	}
	if cfg.UpstreamCertFile != "" {
		// Fail at startup, not at the first rotation, on a bad upstream.
		if _, err := c.loadUpstream(c.clock.Now()); err != nil {
			return nil, fmt.Errorf("ca config: %w", err)
		}
	}
	if err := c.files.init(); err != nil {
		return nil, err
	}
	if c.state, err = c.files.load(); err != nil {
		return nil, err
	}
	c.setView()
	if err := c.Rotate(ctx); err != nil {
		return nil, fmt.Errorf("start CA: %w", err)
	}
	c.logReady()
	return c, nil
}

// logReady tells the operator which keys sign, once per start.
func (c *CA) logReady() {
	v := c.view.Load()
	c.log.Info("CA ready",
		telemetry.Serial, v.x509.cert.SerialNumber.Text(16),
		telemetry.ExpiresAt, v.x509.notAfter.UTC().Format(time.RFC3339),
		telemetry.KeyID, v.jwt.kid,
		telemetry.Count, len(v.x509Authorities),
		telemetry.Path, c.cfg.Dir)
}

// TrustDomain is the trust domain the CA signs for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// X509Authorities returns the X.509 trust anchors this CA currently
// publishes: its own roots, or the upstream roots it chains to. The
// certificates are shared; callers must not modify them.
func (c *CA) X509Authorities() []*x509.Certificate {
	return append([]*x509.Certificate(nil), c.view.Load().x509Authorities...)
}

// JWTAuthorities returns the JWT public keys this CA currently publishes,
// by key id.
func (c *CA) JWTAuthorities() map[string]crypto.PublicKey {
	src := c.view.Load().jwtAuthorities
	out := make(map[string]crypto.PublicKey, len(src))
	for kid, pub := range src {
		out[kid] = pub
	}
	return out
}
