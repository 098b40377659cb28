package workloadapi

import (
	"crypto"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
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

// TestFetchBundles_KeyedByTrustDomainIDWithStandardJWKS reads the protocol
// messages themselves: both bundle maps are keyed by the SPIFFE ID of the
// trust domain ("spiffe://example.org", Workload API §5.1, §6.1), which
// every client library parses, and a JWT bundle is a plain RFC 7517 JWK Set
// (§6.2.2) whose keys all carry a kid and no "use": the SPIFFE bundle's
// "jwt-svid" use would make validators that look for "sig" skip the keys,
// as SPIRE's StandardJWKS form avoids too.
func TestFetchBundles_KeyedByTrustDomainIDWithStandardJWKS(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	raw := env.srv.rawClient(t)
	ctx := withHeader(testContext(t))

	xs, err := raw.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	x509Resp, err := xs.Recv()
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	wantX509 := map[string][]byte{"spiffe://example.org": env.ca.root.Raw, "spiffe://partner.example": env.fed.root.Raw}
	if diff := cmp.Diff(wantX509, x509Resp.GetBundles()); diff != "" {
		t.Errorf("X.509 bundles (-want +got):\n%s", diff)
	}

	js, err := raw.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jwtResp, err := js.Recv()
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	type jwk struct {
		Kty, Kid, Use string
	}
	got := map[string][]jwk{}
	for td, doc := range jwtResp.GetBundles() {
		var set struct{ Keys []jwk }
		if err := json.Unmarshal(doc, &set); err != nil {
			t.Fatalf("JWT bundle of %s is not a JWK Set: %v", td, err)
		}
		got[td] = set.Keys
	}
	want := map[string][]jwk{
		"spiffe://example.org":     {{Kty: "EC", Kid: env.ca.jwtKID}},
		"spiffe://partner.example": {{Kty: "EC", Kid: env.fed.jwtKID}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JWT bundles (-want +got):\n%s", diff)
	}
}
