package ca

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var txnAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256}

func txnClaims() map[string]any {
	return map[string]any{
		"txn": "0190f1a2-grant", "aud": "spiffe://example.org", "scope": "repo:read",
		"req_wl": "spiffe://example.org/nhid/agent/join_token/abc",
		"tctx":   map[string]any{"purpose": "build"},
	}
}

// verifyTxn checks the token's signature against the CA's JWT bundle and
// returns its header and claims.
func verifyTxn(t *testing.T, e *env, tok string) (jose.Header, map[string]any) {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, txnAlgs)
	if err != nil {
		t.Fatalf("parse txn token: %v", err)
	}
	h := parsed.Headers[0]
	key, ok := e.jwtBundle(t).FindJWTAuthority(h.KeyID)
	if !ok {
		t.Fatalf("kid %q is not in the JWT bundle", h.KeyID)
	}
	var claims map[string]any
	if err := parsed.Claims(key, &claims); err != nil {
		t.Fatalf("verify txn token: %v", err)
	}
	return h, claims
}

func TestSignTxnToken_IsATypedJWTVerifiableWithTheJWTBundle(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	e.clock.Set(testStart.Add(300 * time.Millisecond))
	tok, iat, exp, err := c.SignTxnToken(context.Background(), TxnParams{Subject: testID, TTL: 10 * time.Minute, Claims: txnClaims()})
	if err != nil {
		t.Fatalf("SignTxnToken: %v", err)
	}
	h, claims := verifyTxn(t, e, tok)
	if got := h.ExtraHeaders[jose.HeaderType]; got != TxnTokenType {
		t.Errorf("typ header = %v, want %q", got, TxnTokenType)
	}
	want := map[string]any{
		"txn": "0190f1a2-grant", "aud": "spiffe://example.org", "scope": "repo:read",
		"req_wl": "spiffe://example.org/nhid/agent/join_token/abc",
		"tctx":   map[string]any{"purpose": "build"},
		"sub":    testID.String(), "iat": float64(testStart.Unix()), "exp": float64(testStart.Add(10 * time.Minute).Unix()),
	}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if !iat.Equal(testStart) || !exp.Equal(testStart.Add(10*time.Minute)) {
		t.Errorf("issuedAt, expiresAt = %v, %v; want %v, %v", iat, exp, testStart, testStart.Add(10*time.Minute))
	}
}

func TestSignTxnToken_TTLIsCappedByTheActiveKey(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	e.clock.Set(testStart.Add(DefaultTTL - time.Minute))
	_, _, exp, err := c.SignTxnToken(context.Background(), TxnParams{Subject: testID, TTL: time.Hour, Claims: txnClaims()})
	if err != nil {
		t.Fatalf("SignTxnToken: %v", err)
	}
	if want := testStart.Add(DefaultTTL); !exp.Equal(want) {
		t.Errorf("expiresAt = %v, want the key's end %v", exp, want)
	}
}

func TestSignTxnToken_FollowsJWTKeyRotation(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	sign := func() string {
		t.Helper()
		tok, _, _, err := c.SignTxnToken(context.Background(), TxnParams{Subject: testID, TTL: time.Minute, Claims: txnClaims()})
		if err != nil {
			t.Fatalf("SignTxnToken at %s: %v", e.clock.Now(), err)
		}
		h, _ := verifyTxn(t, e, tok)
		return h.KeyID
	}
	before := sign()
	e.clock.Set(testStart.Add(DefaultTTL / 2))
	e.rotate(t, c)
	e.clock.Set(testStart.Add(DefaultTTL / 6 * 5))
	e.rotate(t, c)
	after := sign()
	if before == after {
		t.Fatalf("txn tokens are still signed by key %q after the JWT key rotated", before)
	}
	if active := c.view.Load().jwt.kid; after != active {
		t.Errorf("signed with key %q, want the active key %q", after, active)
	}
}

func TestSignTxnToken_RejectsBadParams(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	with := func(k string, v any) map[string]any {
		m := txnClaims()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		p    TxnParams
		want string
	}{
		{"no subject", TxnParams{TTL: time.Minute, Claims: txnClaims()}, "subject"},
		{"subject of another trust domain", TxnParams{Subject: spiffeid.RequireFromString("spiffe://other.org/w"), TTL: time.Minute, Claims: txnClaims()}, "subject"},
		{"zero ttl", TxnParams{Subject: testID, Claims: txnClaims()}, "ttl"},
		{"no txn", TxnParams{Subject: testID, TTL: time.Minute, Claims: with("txn", nil)}, `"txn"`},
		{"txn not a string", TxnParams{Subject: testID, TTL: time.Minute, Claims: with("txn", 7)}, `"txn"`},
		{"no aud", TxnParams{Subject: testID, TTL: time.Minute, Claims: with("aud", nil)}, `"aud"`},
		{"caller sets exp", TxnParams{Subject: testID, TTL: time.Minute, Claims: with("exp", 1)}, `"exp"`},
		{"caller sets sub", TxnParams{Subject: testID, TTL: time.Minute, Claims: with("sub", "x")}, `"sub"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := c.SignTxnToken(context.Background(), tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignTxnToken error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func BenchmarkSignTxnToken(b *testing.B) {
	e := newEnv(b, time.Now())
	c := e.start(b)
	p := TxnParams{Subject: testID, TTL: 10 * time.Minute, Claims: txnClaims()}
	for b.Loop() {
		if _, _, _, err := c.SignTxnToken(context.Background(), p); err != nil {
			b.Fatal(err)
		}
	}
}
