package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/svid"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var (
	testTD = spiffeid.RequireTrustDomainFromString("example.org")
	testID = spiffeid.RequireFromString("spiffe://example.org/workload/billing")
	// testStart is a whole second, so certificate times compare exactly.
	testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// env is one CA's surroundings: a real bbolt store, a fake clock, a state
// directory and a metrics registry.
type env struct {
	store *bolt.Store
	clock *clock.Fake
	dir   string
	reg   *prometheus.Registry
}

func newEnv(t testing.TB, start time.Time) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &env{store: st, clock: clock.NewFake(start), dir: filepath.Join(t.TempDir(), "ca"), reg: prometheus.NewRegistry()}
}

func (e *env) config() Config {
	return Config{
		TrustDomain: testTD,
		Dir:         e.dir,
		Bundles:     e.store,
		Clock:       e.clock,
		Log:         slog.New(slog.DiscardHandler),
		Metrics:     e.reg,
	}
}

// start creates a CA; a fresh registry each time so restarts can register.
func (e *env) start(t testing.TB, mod ...func(*Config)) *CA {
	t.Helper()
	e.reg = prometheus.NewRegistry()
	cfg := e.config()
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return c
}

func (e *env) rotate(t *testing.T, c *CA) {
	t.Helper()
	if err := c.Rotate(context.Background()); err != nil {
		t.Fatalf("Rotate at %s: %v", e.clock.Now(), err)
	}
}

// bundle reads the trust domain's bundle from the store.
func (e *env) bundle(t *testing.T) *typesv1.Bundle {
	t.Helper()
	b, err := e.store.GetBundle(context.Background(), testTD.Name())
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	return b
}

func (e *env) x509Bundle(t *testing.T) *x509bundle.Bundle {
	t.Helper()
	var certs []*x509.Certificate
	for _, xa := range e.bundle(t).GetX509Authorities() {
		c, err := x509.ParseCertificate(xa.GetAsn1())
		if err != nil {
			t.Fatalf("bundle X.509 authority: %v", err)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(testTD, certs)
}

func (e *env) jwtBundle(t *testing.T) *jwtbundle.Bundle {
	t.Helper()
	keys := make(map[string]crypto.PublicKey)
	for _, ja := range e.bundle(t).GetJwtAuthorities() {
		pub, err := x509.ParsePKIXPublicKey(ja.GetPublicKey())
		if err != nil {
			t.Fatalf("bundle JWT authority %s: %v", ja.GetKeyId(), err)
		}
		keys[ja.GetKeyId()] = pub
	}
	return jwtbundle.FromJWTAuthorities(testTD, keys)
}

func mustKey(t testing.TB, kt svid.KeyType) crypto.Signer {
	t.Helper()
	k, err := svid.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signX509(t testing.TB, c *CA, ttl time.Duration) []*x509.Certificate {
	t.Helper()
	chain, err := c.SignX509SVID(context.Background(), X509Params{ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: ttl})
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	return chain
}

// verifyX509 checks chain as a workload's peer would: against a bundle,
// at the given time.
func verifyX509(chain []*x509.Certificate, b *x509bundle.Bundle, at time.Time) error {
	_, _, err := x509svid.Verify(chain, b, x509svid.WithTime(at))
	return err
}

func ders(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = string(c.Raw)
	}
	return out
}

func bundleX509DERs(b *typesv1.Bundle) []string {
	var out []string
	for _, xa := range b.GetX509Authorities() {
		out = append(out, string(xa.GetAsn1()))
	}
	return out
}

func bundleKIDs(b *typesv1.Bundle) []string {
	var out []string
	for _, ja := range b.GetJwtAuthorities() {
		out = append(out, ja.GetKeyId())
	}
	return out
}

// flakyBundles wraps the real store and fails on demand, to show that a
// store outage never lets an unpublished key sign.
type flakyBundles struct {
	BundleStore
	fail     atomic.Bool
	failures atomic.Int32
}

var errStoreDown = errors.New("store unavailable")

func (f *flakyBundles) UpdateBundle(ctx context.Context, td string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error) {
	if f.fail.Load() {
		f.failures.Add(1)
		return nil, errStoreDown
	}
	return f.BundleStore.UpdateBundle(ctx, td, fn)
}
