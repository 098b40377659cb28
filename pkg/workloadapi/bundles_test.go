package workloadapi

import (
	"crypto"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIndexBundles_OwnTrustDomainWinsOverAFederatedBundleClaimingIt(t *testing.T) {
	own := newTestCA(t, "example.org")
	impostor := newTestCA(t, "example.org")
	fed := newTestCA(t, "partner.example")
	tb := indexBundles(&Update{
		Bundle:           own.bundle(t),
		FederatedBundles: []*spiffebundle.Bundle{impostor.bundle(t), nil, fed.bundle(t)},
	})

	got := tb.x509Bundles(true)
	want := map[string][]byte{
		"spiffe://example.org":     own.root.Raw,
		"spiffe://partner.example": fed.root.Raw,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("X.509 bundles (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string][]byte{"spiffe://partner.example": fed.root.Raw}, tb.x509Bundles(false)); diff != "" {
		t.Errorf("federated X.509 bundles (-want +got):\n%s", diff)
	}
}

func TestMarshalJWKS_IsStableAndParsesAsAJWTBundle(t *testing.T) {
	auths := map[string]crypto.PublicKey{}
	for _, kid := range []string{"k3", "k1", "k2", "k5", "k4"} {
		auths[kid] = newKey(t).Public()
	}
	first, err := marshalJWKS(auths)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := marshalJWKS(auths)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(first) {
			t.Fatalf("JWKS encoding changed between calls:\n%s\n%s", first, again)
		}
	}
	b, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), first)
	if err != nil {
		t.Fatalf("parse JWKS: %v", err)
	}
	if !jwtbundle.FromJWTAuthorities(b.TrustDomain(), auths).Equal(b) {
		t.Errorf("parsed JWKS holds other keys than were marshalled")
	}
}
