package relyingparty

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestIntrospect_ActiveTokenDescribesTheGrant(t *testing.T) {
	h := newHarness(t)
	g, tok := h.grant("grant-1", 10*time.Minute)
	code, got := h.introspect(h.client, tok)
	want := map[string]any{
		"active": true, "scope": "repo:read", "client_id": agentID, "token_type": "N_A",
		"exp": float64(g.ExpiresAt), "iat": float64(g.CreatedAt), "sub": workload.String(),
		"aud": "spiffe://example.org", "iss": agentid.Server(td).String(), "jti": "grant-1-token", "txn": "grant-1",
		"tctx": map[string]any{"purpose": "builds releases", "reason": "release 1.2"},
		"rctx": map[string]any{"node": agentID},
	}
	if code != http.StatusOK {
		t.Fatalf("status %d, want 200", code)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("introspection (-want +got):\n%s", diff)
	}
}

func TestIntrospect_InactiveTokensAnswerOnlyActiveFalse(t *testing.T) {
	h := newHarness(t)
	other := otherCA(t, spiffeid.RequireTrustDomainFromString("example.org"))
	tests := []struct {
		name  string
		token func() string
	}{
		{"garbage", func() string { return "not.a.jwt" }},
		{"revoked", func() string {
			_, tok := h.grant("revoked", time.Hour)
			h.setStatus("revoked", typesv1.GrantStatus_GRANT_STATUS_REVOKED)
			return tok
		}},
		{"released", func() string {
			_, tok := h.grant("released", time.Hour)
			h.setStatus("released", typesv1.GrantStatus_GRANT_STATUS_RELEASED)
			return tok
		}},
		{"unknown grant", func() string {
			tok, _, _ := h.sign(h.ca, "never-stored", workload, "spiffe://example.org", time.Hour)
			return tok
		}},
		{"other audience", func() string {
			tok, _, _ := h.sign(h.ca, "aud", workload, "spiffe://other.org", time.Hour)
			return tok
		}},
		{"subject is not the grant's", func() string {
			h.grant("stolen", time.Hour)
			tok, _, _ := h.sign(h.ca, "stolen", spiffeid.RequireFromString("spiffe://example.org/thief"), "spiffe://example.org", time.Hour)
			return tok
		}},
		{"signed by a key outside the bundle", func() string {
			_, _ = h.grant("forged", time.Hour)
			tok, _, _ := h.sign(other, "forged", workload, "spiffe://example.org", time.Hour)
			return tok
		}},
		{"a JWT-SVID, not a Txn-Token", func() string {
			tok, _, _, err := h.ca.SignJWTSVID(context.Background(), ca.JWTParams{ID: workload, Audience: []string{"spiffe://example.org"}, TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, got := h.introspect(h.client, tc.token())
			if code != http.StatusOK {
				t.Fatalf("status %d, want 200", code)
			}
			if diff := cmp.Diff(map[string]any{"active": false}, got); diff != "" {
				t.Errorf("introspection (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIntrospect_ExpiredTokenIsInactive(t *testing.T) {
	h := newHarness(t)
	_, tok := h.grant("short", time.Minute)
	if _, got := h.introspect(h.client, tok); got["active"] != true {
		t.Fatalf("fresh token: %v, want active", got)
	}
	h.clock.Add(2 * time.Minute)
	if _, got := h.introspect(h.client, tok); !cmp.Equal(got, map[string]any{"active": false}) {
		t.Errorf("expired token: %v, want {active: false}", got)
	}
}

func TestIntrospect_RevocationIsVisibleAtOnce(t *testing.T) {
	h := newHarness(t)
	_, tok := h.grant("g", time.Hour)
	if _, got := h.introspect(h.client, tok); got["active"] != true {
		t.Fatalf("before revocation: %v, want active", got)
	}
	h.setStatus("g", typesv1.GrantStatus_GRANT_STATUS_REVOKED)
	if _, got := h.introspect(h.client, tok); got["active"] != false {
		t.Errorf("right after revocation: %v, want inactive", got)
	}
}

func TestServer_RefusesClientsWithoutAnSVIDOfTheTrustDomain(t *testing.T) {
	h := newHarness(t)
	_, tok := h.grant("g", time.Hour)
	foreign := otherCA(t, spiffeid.RequireTrustDomainFromString("other.org"))
	clients := map[string]*http.Client{
		"no client certificate":        h.httpClient(nil),
		"SVID of another trust domain": h.httpClient(h.svid(foreign, spiffeid.RequireFromString("spiffe://other.org/rp"))),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			resp, err := c.PostForm(h.url+PathIntrospect, url.Values{"token": {tok}})
			if err == nil {
				resp.Body.Close()
			}
			wantTLSRefusal(t, err)
		})
	}
}

func TestIntrospect_RejectsMalformedRequests(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name     string
		method   string
		path     string
		ctype    string
		body     string
		wantCode int
	}{
		{"GET is not allowed", http.MethodGet, PathIntrospect, "", "", http.StatusMethodNotAllowed},
		{"POST on the JWKS", http.MethodPost, PathJWKS, "application/x-www-form-urlencoded", "", http.StatusMethodNotAllowed},
		{"JSON body", http.MethodPost, PathIntrospect, "application/json", `{"token":"x"}`, http.StatusUnsupportedMediaType},
		{"no token", http.MethodPost, PathIntrospect, "application/x-www-form-urlencoded", "token_type_hint=x", http.StatusBadRequest},
		{"two tokens", http.MethodPost, PathIntrospect, "application/x-www-form-urlencoded", "token=a&token=b", http.StatusBadRequest},
		{"body too large", http.MethodPost, PathIntrospect, "application/x-www-form-urlencoded", "token=" + strings.Repeat("a", 9<<10), http.StatusRequestEntityTooLarge},
		{"unknown path", http.MethodGet, "/admin", "", "", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, h.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
		})
	}
}

func TestJWKS_ServesTheKeysThatVerifyTxnTokens(t *testing.T) {
	h := newHarness(t)
	resp, err := h.client.Get(h.url + PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/jwk-set+json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
	}
	jb, err := jwtbundle.Read(td, resp.Body)
	if err != nil {
		t.Fatalf("JWKS does not parse: %v", err)
	}
	var want []string
	for kid := range h.ca.JWTAuthorities() {
		want = append(want, kid)
	}
	var got []string
	for kid := range jb.JWTAuthorities() {
		got = append(got, kid)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("key ids (-want +got):\n%s", diff)
	}
}

// otherCA is an unrelated CA of trust domain d with its own store.
func otherCA(t *testing.T, d spiffeid.TrustDomain) *ca.CA {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "other.db"), bolt.Options{Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: d, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func BenchmarkIntrospect(b *testing.B) {
	h := newHarness(b)
	_, tok := h.grant("bench", time.Hour)
	for b.Loop() {
		if _, got := h.introspect(h.client, tok); got["active"] != true {
			b.Fatalf("introspection: %v", got)
		}
	}
}
