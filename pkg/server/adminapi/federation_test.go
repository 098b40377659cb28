package adminapi

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/federation"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")

// partnerCA is a CA certificate of td, as a partner's bundle holds it.
func partnerCA(t *testing.T, td spiffeid.TrustDomain) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()},
	}
	return signCert(t, tmpl, tmpl, key, key)
}

// partnerDocument is a SPIFFE bundle document of td with certs.
func partnerDocument(t *testing.T, td spiffeid.TrustDomain, certs ...*x509.Certificate) []byte {
	t.Helper()
	sb := spiffebundle.FromX509Authorities(td, certs)
	sb.SetRefreshHint(5 * time.Minute)
	sb.SetSequenceNumber(3)
	doc, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestFederation_SetGetListDelete(t *testing.T) {
	h, rec := auditedHarness(t)
	fed := adminv1.NewFederationServiceClient(dial(t, h.socket))
	ctx := testCtx(t)
	ca := partnerCA(t, partnerTD)
	set, err := fed.SetFederatedBundle(ctx, &adminv1.SetFederatedBundleRequest{TrustDomain: "partner.test", Bundle: partnerDocument(t, partnerTD, ca)})
	if err != nil {
		t.Fatalf("SetFederatedBundle: %v", err)
	}
	b := set.GetBundle()
	if b.GetTrustDomain() != "partner.test" || len(b.GetX509Authorities()) != 1 || !bytes.Equal(b.GetX509Authorities()[0].GetAsn1(), ca.Raw) ||
		b.GetRefreshHint() != 300 || b.GetSequenceNumber() != 1 {
		t.Errorf("stored %v", b)
	}
	// The server's own bundle is not a federated one.
	if _, err := h.store.UpdateBundle(ctx, td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: selfSignedCA(t).Raw}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	list, err := fed.ListFederatedBundles(ctx, &adminv1.ListFederatedBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetBundles()) != 1 || list.GetBundles()[0].GetTrustDomain() != "partner.test" {
		t.Errorf("listed %v", list.GetBundles())
	}
	got, err := fed.GetFederatedBundle(ctx, &adminv1.GetFederatedBundleRequest{TrustDomain: "partner.test"})
	if err != nil {
		t.Fatal(err)
	}
	if parsed, err := federation.Parse(partnerTD, []byte(got.GetJwks())); err != nil || !bytes.Equal(parsed.GetX509Authorities()[0].GetAsn1(), ca.Raw) {
		t.Errorf("jwks %s does not hold the authority: %v", got.GetJwks(), err)
	}
	if _, err := fed.DeleteFederatedBundle(ctx, &adminv1.DeleteFederatedBundleRequest{TrustDomain: "partner.test"}); err != nil {
		t.Fatalf("DeleteFederatedBundle: %v", err)
	}
	_, err = fed.GetFederatedBundle(ctx, &adminv1.GetFederatedBundleRequest{TrustDomain: "partner.test"})
	requireCode(t, err, codes.NotFound, "partner.test")
	_, err = fed.DeleteFederatedBundle(ctx, &adminv1.DeleteFederatedBundleRequest{TrustDomain: "partner.test"})
	requireCode(t, err, codes.NotFound)
	checkBriefs(t, rec, []brief{
		{"admin.federation.bundle.set", "partner.test", audit.OutcomeSuccess},
		{"admin.federation.bundle.delete", "partner.test", audit.OutcomeSuccess},
		{"admin.federation.bundle.delete", "partner.test", audit.OutcomeFailure},
	})
	if d := rec.all()[0].Details; d["sequence"] != uint64(1) || d["x509_authorities"] != 1 {
		t.Errorf("set record details = %v", d)
	}
}

func TestFederation_RefusalsNameTheFieldAndChangeNothing(t *testing.T) {
	h, rec := auditedHarness(t)
	fed := adminv1.NewFederationServiceClient(dial(t, h.socket))
	ctx := testCtx(t)
	good := partnerDocument(t, partnerTD, partnerCA(t, partnerTD))
	for _, tt := range []struct {
		name, td string
		doc      []byte
		want     []string
	}{
		{"own trust domain", "example.org", good, []string{"trust_domain:", "this server's own trust domain"}},
		{"no trust domain", "", good, []string{"trust_domain: required"}},
		{"not a trust domain", "Partner Test", good, []string{"trust_domain:", "is not a trust domain name"}},
		{"a SPIFFE ID", "spiffe://partner.test/x", good, []string{"trust_domain:", `give "partner.test"`}},
		{"no document", "partner.test", nil, []string{"bundle: required"}},
		{"garbage", "partner.test", []byte("not json"), []string{"bundle:", "unable to parse JWKS"}},
		{"oversized", "partner.test", bytes.Repeat([]byte(" "), federation.MaxDocumentSize+1), []string{"bundle:", "at most 1048576"}},
		{"another trust domain's bundle", "partner.test", partnerDocument(t, partnerTD, partnerCA(t, td)),
			[]string{"bundle:", `not in trust domain "partner.test"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.snapshot(t)
			_, err := fed.SetFederatedBundle(ctx, &adminv1.SetFederatedBundleRequest{TrustDomain: tt.td, Bundle: tt.doc})
			requireCode(t, err, codes.InvalidArgument, tt.want...)
			h.requireUnchanged(t, before)
		})
	}
	_, err := fed.DeleteFederatedBundle(ctx, &adminv1.DeleteFederatedBundleRequest{TrustDomain: "example.org"})
	requireCode(t, err, codes.InvalidArgument, "trust_domain:", "own trust domain")
	_, err = fed.GetFederatedBundle(ctx, &adminv1.GetFederatedBundleRequest{TrustDomain: "example.org"})
	requireCode(t, err, codes.InvalidArgument, "own trust domain")
	for _, ev := range rec.all() {
		if ev.Outcome != audit.OutcomeFailure || !strings.HasPrefix(ev.Action, "admin.federation.bundle.") {
			t.Errorf("record %+v: want a failed federation change", ev)
		}
	}
	if n := len(rec.all()); n != 9 {
		t.Errorf("%d records, want one per refused change (9)", n)
	}
}

// staticStatus is a FederationStatus whose answer the test sets: the
// refresher's own tests cover how it is made.
type staticStatus []federation.Status

func (s staticStatus) Status() []federation.Status { return s }

func TestFederation_ListRelationships(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	fed := adminv1.NewFederationServiceClient(dial(t, h.socket))
	ctx := testCtx(t)
	resp, err := fed.ListFederationRelationships(ctx, &adminv1.ListFederationRelationshipsRequest{})
	if err != nil || len(resp.GetRelationships()) != 0 {
		t.Fatalf("without relationships: %v, %v", resp, err)
	}

	if _, err := fed.SetFederatedBundle(ctx, &adminv1.SetFederatedBundleRequest{TrustDomain: "partner.test", Bundle: partnerDocument(t, partnerTD, partnerCA(t, partnerTD))}); err != nil {
		t.Fatal(err)
	}
	last, next := time.Unix(1900000000, 0), time.Unix(1900000300, 0)
	web := spiffeid.RequireTrustDomainFromString("web.test")
	h.svc.federation = staticStatus{
		{Relationship: federation.Relationship{TrustDomain: partnerTD, URL: "https://partner.test/bundle", Profile: federation.ProfileSPIFFE,
			EndpointID: spiffeid.RequireFromPath(partnerTD, "/nhid/server")}, LastRefresh: last, NextRefresh: next},
		{Relationship: federation.Relationship{TrustDomain: web, URL: "https://web.test/", Profile: federation.ProfileWeb},
			LastError: "GET bundle: endpoint answered 503 Service Unavailable"},
	}
	resp, err = fed.ListFederationRelationships(ctx, &adminv1.ListFederationRelationshipsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rels := resp.GetRelationships()
	if len(rels) != 2 {
		t.Fatalf("relationships %v", rels)
	}
	p, w := rels[0], rels[1]
	if p.GetTrustDomain() != "partner.test" || p.GetProfile() != "https_spiffe" || p.GetEndpointSpiffeId() != "spiffe://partner.test/nhid/server" ||
		p.GetLastRefreshAt() != last.Unix() || p.GetNextRefreshAt() != next.Unix() || p.GetBundleSequence() != 1 || p.GetLastError() != "" {
		t.Errorf("partner relationship %v", p)
	}
	if w.GetProfile() != "https_web" || w.GetEndpointSpiffeId() != "" || w.GetLastRefreshAt() != 0 || w.GetNextRefreshAt() != 0 ||
		w.GetBundleSequence() != 0 || !strings.Contains(w.GetLastError(), "503") {
		t.Errorf("web relationship %v", w)
	}
}
