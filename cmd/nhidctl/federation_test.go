package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")

// caOf is a self-signed CA certificate of a trust domain.
func caOf(t *testing.T, trustDomain spiffeid.TrustDomain) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{trustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func spiffeDocument(t *testing.T, trustDomain spiffeid.TrustDomain, certs ...*x509.Certificate) []byte {
	t.Helper()
	sb := spiffebundle.FromX509Authorities(trustDomain, certs)
	sb.SetRefreshHint(5 * time.Minute)
	doc, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBundle_SetListShowDeleteAFederatedBundle(t *testing.T) {
	s := newServer(t)
	if out := s.mustRun(t, "bundle", "list"); !strings.Contains(out, "no federated bundles") {
		t.Errorf("empty list: %q", out)
	}
	if out := s.mustRun(t, "-o", "json", "bundle", "list"); !strings.Contains(out, `"bundles": []`) {
		t.Errorf("empty JSON list: %q", out)
	}
	ca := caOf(t, partnerTD)
	doc := spiffeDocument(t, partnerTD, ca)
	out := s.mustRun(t, "bundle", "set", "--trust-domain", "partner.test", "--file", writeTemp(t, "partner.json", doc))
	if !strings.Contains(out, "stored the bundle of partner.test: 1 X.509 and 0 JWT authorities, sequence 1") {
		t.Errorf("set: %q", out)
	}
	// Again from stdin: the sequence moves on.
	r := runCLI(t, doc, "--socket", s.socket, "bundle", "set", "--trust-domain", "partner.test", "-f", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "sequence 2") {
		t.Errorf("set from stdin: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	out = s.mustRun(t, "bundle", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "TRUST DOMAIN") ||
		strings.Join(strings.Fields(lines[1]), " ") != "partner.test 1 0 5m0s 2" {
		t.Errorf("list:\n%s", out)
	}
	list := decode(t, s.mustRun(t, "-o", "json", "bundle", "list"), &adminv1.ListFederatedBundlesResponse{})
	if len(list.GetBundles()) != 1 || list.GetBundles()[0].GetSequenceNumber() != 2 {
		t.Errorf("JSON list: %v", list)
	}
	block, _ := pem.Decode([]byte(s.mustRun(t, "bundle", "show", "--trust-domain", "partner.test")))
	if block == nil || string(block.Bytes) != string(ca.Raw) {
		t.Error("bundle show --trust-domain does not print the partner's CA")
	}
	shown := s.mustRun(t, "bundle", "show", "--trust-domain", "partner.test", "--format", "spiffe")
	if b, err := federation.Parse(partnerTD, []byte(shown)); err != nil || len(b.GetX509Authorities()) != 1 {
		t.Errorf("spiffe document of partner.test: %v\n%s", err, shown)
	}
	if out := s.mustRun(t, "bundle", "delete", "partner.test"); !strings.Contains(out, "deleted the bundle of partner.test") {
		t.Errorf("delete: %q", out)
	}
	if r := s.run(t, "bundle", "delete", "partner.test"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("second delete: exit %d, %q", r.code, r.stderr)
	}
}

func TestBundle_SetRefusals(t *testing.T) {
	s := newServer(t)
	good := writeTemp(t, "partner.json", spiffeDocument(t, partnerTD, caOf(t, partnerTD)))
	for _, tt := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"bundle", "set", "--file", good}, 2, "--trust-domain is required"},
		{[]string{"bundle", "set", "--trust-domain", "partner.test"}, 2, "--file is required"},
		{[]string{"bundle", "set", "--trust-domain", "example.org", "--file", good}, 1, "own trust domain"},
		{[]string{"bundle", "set", "--trust-domain", "partner.test", "--file", writeTemp(t, "x.json", []byte("{}"))}, 1, "bundle:"},
		{[]string{"bundle", "set", "--trust-domain", "partner.test", "--file", "/nonexistent.json"}, 1, "no such file"},
		{[]string{"bundle", "delete", "example.org"}, 1, "own trust domain"},
		{[]string{"bundle", "show", "--format", "der"}, 2, "is not one of pem, jwks, spiffe"},
	} {
		if r := s.run(t, tt.args...); r.code != tt.code || !strings.Contains(r.stderr, tt.inStderr) {
			t.Errorf("nhidctl %s: exit %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.code, tt.inStderr)
		}
	}
}

func TestBundleShow_SPIFFEFormatIsTheBootstrapDocument(t *testing.T) {
	s := newServer(t)
	ca := caOf(t, td)
	if _, err := s.store.UpdateBundle(context.Background(), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: ca.Raw}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	doc := s.mustRun(t, "bundle", "show", "--format", "spiffe")
	b, err := federation.Parse(td, []byte(doc))
	if err != nil || len(b.GetX509Authorities()) != 1 || string(b.GetX509Authorities()[0].GetAsn1()) != string(ca.Raw) {
		t.Errorf("bundle show --format spiffe is not a bootstrap bundle: %v\n%s", err, doc)
	}
}

// newFederationServer is a real admin API whose relationship status comes
// from a real refresher fetching from a real HTTPS endpoint (https_web
// with the test server's certificate as ca_file).
func newFederationServer(t *testing.T) *server {
	t.Helper()
	doc := spiffeDocument(t, partnerTD, caOf(t, partnerTD))
	endpoint := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	t.Cleanup(endpoint.Close)
	roots := writeTemp(t, "roots.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: endpoint.Certificate().Raw}))

	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ref, err := federation.NewRefresher(federation.RefresherConfig{TrustDomain: td, Store: st, Relationships: []federation.Relationship{
		{TrustDomain: partnerTD, URL: endpoint.URL + "/bundle", Profile: federation.ProfileWeb, CAFile: roots},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ref.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	s := serveAdmin(t, dir, st, adminapi.Config{Federation: ref})
	return s
}

func TestFederationList(t *testing.T) {
	if out := newServer(t).mustRun(t, "federation", "list"); !strings.Contains(out, "no federation relationships are configured") {
		t.Errorf("without relationships: %q", out)
	}
	s := newFederationServer(t)
	var rel *adminv1.FederationRelationship
	deadline := time.Now().Add(20 * time.Second)
	for rel.GetLastRefreshAt() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh listed within 20s: %v", rel)
		}
		time.Sleep(20 * time.Millisecond)
		resp := decode(t, s.mustRun(t, "-o", "json", "federation", "list"), &adminv1.ListFederationRelationshipsResponse{})
		rel = resp.GetRelationships()[0]
	}
	if rel.GetTrustDomain() != "partner.test" || rel.GetProfile() != "https_web" || rel.GetBundleSequence() != 1 || rel.GetNextRefreshAt() == 0 {
		t.Errorf("relationship: %v", rel)
	}
	out := s.mustRun(t, "federation", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "TRUST DOMAIN") || !strings.Contains(lines[1], "partner.test") ||
		!strings.Contains(lines[1], "https_web") || strings.Contains(lines[1], "never") {
		t.Errorf("table:\n%s", out)
	}
}
