package adminapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/federation"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// selfSignedCA makes a CA certificate for the trust domain.
func selfSignedCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{Organization: []string{"nhid test"}},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: "example.org"}},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return signCert(t, tmpl, tmpl, key, key)
}

func jwtKey(t *testing.T) ([]byte, *ecdsa.PublicKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der, &key.PublicKey
}

func TestGetBundle_BeforeTheCAExistsIsNotFound(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, err := h.bundle.GetBundle(testCtx(t), &adminv1.GetBundleRequest{})
	requireCode(t, err, codes.NotFound, "example.org")
}

func TestGetBundle_ReturnsPEMAndJWKS(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ca := selfSignedCA(t)
	jwtDER, jwtPub := jwtKey(t)
	stored, err := h.store.UpdateBundle(testCtx(t), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: ca.Raw}}
		b.JwtAuthorities = []*typesv1.JWTAuthority{{KeyId: "kid-1", PublicKey: jwtDER, ExpiresAt: testNow.Add(time.Hour).Unix()}}
		b.RefreshHint = 300
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	resp, err := h.bundle.GetBundle(testCtx(t), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	if diff := cmp.Diff(stored, resp.GetBundle(), protocmp.Transform()); diff != "" {
		t.Errorf("bundle (-stored +got):\n%s", diff)
	}
	block, rest := pem.Decode([]byte(resp.GetPem()))
	if block == nil || block.Type != "CERTIFICATE" || string(block.Bytes) != string(ca.Raw) || strings.TrimSpace(string(rest)) != "" {
		t.Errorf("pem = %q, want exactly the CA certificate", resp.GetPem())
	}
	parsed, err := spiffebundle.Parse(td, []byte(resp.GetJwks()))
	if err != nil {
		t.Fatalf("parse jwks %s: %v", resp.GetJwks(), err)
	}
	if auths := parsed.X509Authorities(); len(auths) != 1 || !auths[0].Equal(ca) {
		t.Errorf("jwks X.509 authorities = %v, want the CA", auths)
	}
	key, ok := parsed.FindJWTAuthority("kid-1")
	if !ok || !jwtPub.Equal(key) {
		t.Errorf("jwks JWT authority kid-1 = %v (%v), want the seeded key", key, ok)
	}
	if seq, ok := parsed.SequenceNumber(); !ok || seq != stored.GetSequenceNumber() {
		t.Errorf("jwks sequence number = %d (%v), want %d", seq, ok, stored.GetSequenceNumber())
	}
	if hint, ok := parsed.RefreshHint(); !ok || hint != 300*time.Second {
		t.Errorf("jwks refresh hint = %v (%v), want 5m", hint, ok)
	}
}

func TestGetBundle_CorruptStoredAuthorityIsInternalAndLogged(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, err := h.store.UpdateBundle(context.Background(), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: []byte("not DER")}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.bundle.GetBundle(testCtx(t), &adminv1.GetBundleRequest{})
	requireCode(t, err, codes.Internal, msgInternal)
	if logs := h.logs.String(); !strings.Contains(logs, "x509_authorities[0]") {
		t.Errorf("corruption not logged:\n%s", logs)
	}
}

// TestGetBundle_JWKSIsTheBundleEndpointsDocument: what GetBundle (and so
// "nhidctl bundle show --format spiffe") prints is, byte for byte, the
// document the bundle endpoint serves with its default settings, and so
// carries spiffe_refresh_hint, which a bundle SHOULD set (SPIFFE Trust
// Domain and Bundle section 4.1.2), even when the stored bundle has none.
func TestGetBundle_JWKSIsTheBundleEndpointsDocument(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ca := selfSignedCA(t)
	_, err := h.store.UpdateBundle(testCtx(t), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: ca.Raw}}
		for _, kid := range []string{"kid-c", "kid-a", "kid-d", "kid-b"} {
			der, _ := jwtKey(t)
			b.JwtAuthorities = append(b.JwtAuthorities, &typesv1.JWTAuthority{KeyId: kid, PublicKey: der, ExpiresAt: testNow.Add(time.Hour).Unix()})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	endpoint, err := federation.NewHandler(federation.HandlerConfig{TrustDomain: td, Bundles: h.store})
	if err != nil {
		t.Fatal(err)
	}
	served, err := endpoint.Document(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		resp, err := h.bundle.GetBundle(testCtx(t), &adminv1.GetBundleRequest{})
		if err != nil {
			t.Fatalf("GetBundle: %v", err)
		}
		if resp.GetJwks() != string(served) {
			t.Fatalf("GetBundle jwks differs from the endpoint's document:\n%s\n%s", resp.GetJwks(), served)
		}
	}
	parsed, err := spiffebundle.Parse(td, served)
	if err != nil {
		t.Fatal(err)
	}
	if hint, ok := parsed.RefreshHint(); !ok || hint != federation.DefaultRefreshHint {
		t.Errorf("refresh hint %v (%v), want %v", hint, ok, federation.DefaultRefreshHint)
	}
}

func TestGetBundle_JWKSCarriesTheConfiguredRefreshHint(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ca := selfSignedCA(t)
	if _, err := h.store.UpdateBundle(testCtx(t), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: ca.Raw}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{TrustDomain: td, Store: h.store, BundleRefreshHint: 17 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	_, jwks, err := svc.renderBundle(mustBundle(t, h))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		RefreshHint int64 `json:"spiffe_refresh_hint"`
	}
	if err := json.Unmarshal([]byte(jwks), &doc); err != nil || doc.RefreshHint != 17*60 {
		t.Errorf("spiffe_refresh_hint = %d, %v; want the configured 1020 s", doc.RefreshHint, err)
	}
}

func mustBundle(t *testing.T, h *harness) *typesv1.Bundle {
	t.Helper()
	b, err := h.store.GetBundle(testCtx(t), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}
