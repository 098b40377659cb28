package relyingparty

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/ca"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Conformance of POST /introspect to RFC 7662, RFC 7515 and RFC 9396, as
// clients we do not have would read it.

// TestIntrospect_TokenTypeIsNotApplicable: RFC 7662 section 2.2 takes
// token_type from the OAuth access token types (RFC 6749 section 7.1);
// a Txn-Token is not an access token, which RFC 8693 section 2.2.1 and
// the Txn-Token draft's response spell "N_A" ("txntoken+jwt" is its JWS
// typ, a media type, not a token type).
func TestIntrospect_TokenTypeIsNotApplicable(t *testing.T) {
	h := newHarness(t)
	_, tok := h.grant("g", time.Hour)
	if _, got := h.introspect(h.client, tok); got["active"] != true || got["token_type"] != "N_A" {
		t.Errorf("token_type = %v (active %v), want N_A", got["token_type"], got["active"])
	}
}

// TestIntrospect_JTIIsEachTokensOwn: jti identifies the token (RFC 7662
// section 2.2, RFC 7519 section 4.1.7), and one grant may be issued more
// than one token (each wait for an approved grant signs one), so it is the
// token's own jti claim, never the shared txn; a token without one has no
// jti in the answer.
func TestIntrospect_JTIIsEachTokensOwn(t *testing.T) {
	h := newHarness(t)
	g, _ := h.grant("g", time.Hour)
	ttl := time.Until(time.Unix(g.GetExpiresAt(), 0))
	first := h.signClaims(h.ca, ttl, h.claims("g", map[string]any{"jti": "token-1"}))
	second := h.signClaims(h.ca, ttl, h.claims("g", map[string]any{"jti": "token-2"}))
	none := h.signClaims(h.ca, ttl, h.claims("g", nil))
	tests := []struct {
		name, token string
		wantJTI     any
	}{
		{"first token", first, "token-1"},
		{"second token of the same grant", second, "token-2"},
		{"token without jti", none, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, got := h.introspect(h.client, tc.token)
			if got["active"] != true || got["txn"] != "g" || got["jti"] != tc.wantJTI {
				t.Errorf("active %v, txn %v, jti %v; want active, txn g, jti %v", got["active"], got["txn"], got["jti"], tc.wantJTI)
			}
		})
	}
}

// TestIntrospect_AuthorizationDetailsAreATopLevelMember: RFC 9396 section
// 9.2 says authorization details in an introspection answer MUST be the
// top-level authorization_details member, with the RFC 9396 structure.
func TestIntrospect_AuthorizationDetailsAreATopLevelMember(t *testing.T) {
	h := newHarness(t)
	g, _ := h.grant("g", time.Hour)
	ttl := time.Until(time.Unix(g.GetExpiresAt(), 0))
	details := []any{map[string]any{"type": "repo", "actions": []any{"clone"}, "locations": []any{"https://git.example.org"}}}
	tests := []struct {
		name string
		tctx map[string]any
		want any
	}{
		{"with details", map[string]any{"purpose": "builds", "authorization_details": details}, details},
		{"without details", map[string]any{"purpose": "builds"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := h.signClaims(h.ca, ttl, h.claims("g", map[string]any{"tctx": tc.tctx}))
			_, got := h.introspect(h.client, tok)
			if got["active"] != true {
				t.Fatalf("introspection %v, want active", got)
			}
			if diff := cmp.Diff(tc.want, got["authorization_details"]); diff != "" {
				t.Errorf("authorization_details (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.tctx, got["tctx"]); diff != "" {
				t.Errorf("tctx (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIntrospect_TypHeaderIsComparedAsAMediaType: RFC 7515 section 4.1.9
// makes typ a media type, which a recipient MUST read with "application/"
// prepended when it has no '/', and media types compare case-insensitively
// (RFC 9110 section 8.3.1). Other types stay inactive.
func TestIntrospect_TypHeaderIsComparedAsAMediaType(t *testing.T) {
	h := newHarness(t)
	g, _ := h.grant("g", time.Hour)
	key := h.addJWTKey("typ-test-key")
	tests := []struct {
		typ        string
		wantActive bool
	}{
		{ca.TxnTokenType, true},
		{"application/txntoken+jwt", true},
		{"TxnToken+JWT", true},
		{"Application/TXNTOKEN+jwt", true},
		{"JWT", false},
		{"at+jwt", false},
		{"application/jwt", false},
		{"text/txntoken+jwt", false},
		{"txntoken", false},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			tok := signWithType(t, key, "typ-test-key", tc.typ, h.claimsUntil("g", g.GetExpiresAt()))
			if _, got := h.introspect(h.client, tok); got["active"] != tc.wantActive {
				t.Errorf("typ %q: active = %v, want %v", tc.typ, got["active"], tc.wantActive)
			}
		})
	}
}

// TestIntrospect_TokenTypeHintIsIgnored: RFC 7662 section 2.1 lets the
// server ignore token_type_hint, and a hint it does not know must not
// stop it from finding the token.
func TestIntrospect_TokenTypeHintIsIgnored(t *testing.T) {
	h := newHarness(t)
	_, tok := h.grant("g", time.Hour)
	for _, hint := range []string{"access_token", "refresh_token", "urn:ietf:params:oauth:token-type:txn_token", "no-such-type"} {
		t.Run(hint, func(t *testing.T) {
			resp, err := h.client.PostForm(h.url+PathIntrospect, url.Values{"token": {tok}, "token_type_hint": {hint}})
			if err != nil {
				t.Fatal(err)
			}
			code, got := decode(t, resp)
			if code != http.StatusOK || got["active"] != true {
				t.Errorf("status %d, answer %v; want 200 active", code, got)
			}
		})
	}
}

// claims are the harness grant's Txn-Token claims for txn with extra
// replacing or adding members.
func (h *harness) claims(txn string, extra map[string]any) map[string]any {
	c := map[string]any{
		"txn": txn, "aud": td.ID().String(), "scope": "repo:read", "req_wl": agentID,
		"tctx": map[string]any{"purpose": "builds releases"}, "rctx": map[string]any{"node": agentID},
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// claimsUntil are claims with sub, iat and exp set for a token signed
// outside the CA.
func (h *harness) claimsUntil(txn string, exp int64) map[string]any {
	c := h.claims(txn, nil)
	c["sub"], c["iat"], c["exp"] = workload.String(), h.clock.Now().Unix(), exp
	return c
}

// signClaims signs claims as a Txn-Token of the harness's workload.
func (h *harness) signClaims(signer *ca.CA, ttl time.Duration, claims map[string]any) string {
	h.t.Helper()
	tok, _, _, err := signer.SignTxnToken(context.Background(), ca.TxnParams{Subject: workload, TTL: ttl, Claims: claims})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// addJWTKey adds a fresh P-256 key to the stored bundle's JWT
// authorities under kid, as a second server's key would be.
func (h *harness) addJWTKey(kid string) *ecdsa.PrivateKey {
	h.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = h.store.UpdateBundle(context.Background(), td.Name(), func(b *typesv1.Bundle) error {
		b.JwtAuthorities = append(b.JwtAuthorities, &typesv1.JWTAuthority{KeyId: kid, PublicKey: der, ExpiresAt: time.Now().Add(time.Hour).Unix()})
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return key
}

// signWithType signs claims with key under kid and the given typ header.
func signWithType(t *testing.T, key *ecdsa.PrivateKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
