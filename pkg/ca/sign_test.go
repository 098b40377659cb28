package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/nhid/nhid/pkg/svid"
)

var oidPurpose = asn1.ObjectIdentifier{2, 25, 1234, 1}

func TestSignX509SVID_TTLIsCappedByTheActiveCA(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	caEnd := c.X509Authorities()[0].NotAfter
	tests := []struct {
		name          string
		at            time.Duration
		ttl           time.Duration
		wantNotBefore time.Time
		wantNotAfter  time.Time
	}{
		{"short TTL is kept", 0, time.Hour, testStart.Add(-backdate), testStart.Add(time.Hour)},
		{"TTL beyond the CA is capped", 0, 48 * time.Hour, testStart.Add(-backdate), caEnd},
		{"near the CA's end the TTL shrinks", 23 * time.Hour, 2 * time.Hour, testStart.Add(23*time.Hour - backdate), caEnd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clock.Set(testStart.Add(tt.at))
			leaf := signX509(t, c, tt.ttl)[0]
			got := [2]time.Time{leaf.NotBefore, leaf.NotAfter}
			want := [2]time.Time{tt.wantNotBefore, tt.wantNotAfter}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("validity (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("an expired CA signs nothing", func(t *testing.T) {
		e.clock.Set(caEnd)
		_, err := c.SignX509SVID(context.Background(), X509Params{ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour})
		if err == nil || !strings.Contains(err.Error(), "the active CA expired") {
			t.Fatalf("error = %v, want the active CA expired", err)
		}
	})
}

func TestSignJWTSVID_TTLIsCappedByTheActiveKey(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	keyEnd := testStart.Add(DefaultTTL)
	tests := []struct {
		name    string
		at      time.Duration
		ttl     time.Duration
		wantExp time.Time
	}{
		{"short TTL is kept", 0, 5 * time.Minute, testStart.Add(5 * time.Minute)},
		{"TTL beyond the key is capped", 0, 48 * time.Hour, keyEnd},
		{"near the key's end the TTL shrinks", 23*time.Hour + 30*time.Minute, time.Hour, keyEnd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := testStart.Add(tt.at)
			e.clock.Set(now.Add(400 * time.Millisecond))
			tok, iat, exp, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: []string{"db"}, TTL: tt.ttl})
			if err != nil {
				t.Fatal(err)
			}
			got := [3]time.Time{iat, exp, unverifiedClaims(t, tok).Expiry.Time()}
			want := [3]time.Time{now, tt.wantExp, tt.wantExp}
			if diff := cmp.Diff(want, got, cmp.Comparer(time.Time.Equal)); diff != "" {
				t.Fatalf("issuedAt, expiresAt, token exp (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSignJWTSVID_CarriesTheSPIFFEAndExtraClaims(t *testing.T) {
	e := newEnv(t, time.Now().Truncate(time.Second))
	c := e.start(t)
	tok, iat, exp, err := c.SignJWTSVID(context.Background(), JWTParams{
		ID: testID, Audience: []string{"db", "cache"}, TTL: 5 * time.Minute,
		ExtraClaims: map[string]any{"purpose": "reconcile invoices", "owner": "ana@example.org"},
	})
	if err != nil {
		t.Fatal(err)
	}
	sv, err := jwtsvid.ParseAndValidate(tok, e.jwtBundle(t), []string{"cache"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	jti, _ := sv.Claims["jti"].(string)
	got := map[string]any{
		"sub": sv.Claims["sub"], "aud": sv.Audience, "iat": sv.Claims["iat"], "exp": sv.Claims["exp"],
		"purpose": sv.Claims["purpose"], "owner": sv.Claims["owner"], "jti length": len(jti),
	}
	want := map[string]any{
		"sub": testID.String(), "aud": []string{"db", "cache"},
		"iat": float64(iat.Unix()), "exp": float64(exp.Unix()),
		"purpose": "reconcile invoices", "owner": "ana@example.org", "jti length": 32,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("claims (-want +got):\n%s", diff)
	}
	tok2, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: []string{"db"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if unverifiedClaims(t, tok2).ID == jti {
		t.Fatal("two tokens share a jti")
	}
}

func TestSignX509SVID_CarriesDNSNamesAndExtraExtensions(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	value, _ := asn1.Marshal("reconcile invoices")
	chain, err := c.SignX509SVID(context.Background(), X509Params{
		ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour,
		DNSNames:        []string{"billing.internal"},
		ExtraExtensions: []pkix.Extension{{Id: oidPurpose, Value: value}},
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	var gotExt []byte
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(oidPurpose) {
			gotExt = ext.Value
		}
	}
	if diff := cmp.Diff([]any{[]string{"billing.internal"}, value, 1}, []any{leaf.DNSNames, gotExt, len(chain)}); diff != "" {
		t.Fatalf("DNS names, purpose extension, chain length (-want +got):\n%s", diff)
	}
	if err := verifyX509(chain, e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Fatalf("SVID does not verify: %v", err)
	}
}

func TestSignX509SVID_RejectsBadParams(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	pub := mustKey(t, svid.KeyTypeECP256).Public()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ext := func(oid asn1.ObjectIdentifier) pkix.Extension { return pkix.Extension{Id: oid, Value: []byte{5, 0}} }
	tests := []struct {
		name    string
		p       X509Params
		wantErr string
	}{
		{"empty id", X509Params{PublicKey: pub, TTL: time.Hour}, "id: SPIFFE ID is empty"},
		{"foreign trust domain", X509Params{ID: spiffeid.RequireFromString("spiffe://other.org/w"), PublicKey: pub, TTL: time.Hour}, "id: spiffe://other.org/w is not in trust domain example.org"},
		{"trust domain id", X509Params{ID: testTD.ID(), PublicKey: pub, TTL: time.Hour}, "has no path"},
		{"id over 2048 bytes", X509Params{ID: idOfLen(t, 2049), PublicKey: pub, TTL: time.Hour}, "id: SPIFFE ID is 2049 bytes, at most 2048 allowed"},
		{"zero TTL", X509Params{ID: testID, PublicKey: pub}, "ttl: 0s must be positive"},
		{"negative TTL", X509Params{ID: testID, PublicKey: pub, TTL: -time.Second}, "ttl: -1s must be positive"},
		{"weak key", X509Params{ID: testID, PublicKey: small.Public(), TTL: time.Hour}, "public key: RSA key of 1024 bits is too small"},
		{"bad DNS name", X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, DNSNames: []string{"a b"}}, `dns names[0] "a b"`},
		{"SAN override", X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, ExtraExtensions: []pkix.Extension{ext(asn1.ObjectIdentifier{2, 5, 29, 17})}}, "extra extensions[0]: 2.5.29.17 is a standard certificate extension"},
		{"AIA", X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, ExtraExtensions: []pkix.Extension{ext(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1})}}, "is a standard certificate extension"},
		{"duplicate extension", X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, ExtraExtensions: []pkix.Extension{ext(oidPurpose), ext(oidPurpose)}}, "extra extensions[1]: 2.25.1234.1 appears twice"},
		{"empty extension", X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, ExtraExtensions: []pkix.Extension{{Id: oidPurpose}}}, "empty value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SignX509SVID(context.Background(), tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestSignJWTSVID_RejectsBadParams(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	tests := []struct {
		name    string
		p       JWTParams
		wantErr string
	}{
		{"empty id", JWTParams{Audience: []string{"a"}, TTL: time.Minute}, "id: SPIFFE ID is empty"},
		{"foreign trust domain", JWTParams{ID: spiffeid.RequireFromString("spiffe://other.org/w"), Audience: []string{"a"}, TTL: time.Minute}, "not in trust domain"},
		{"no audience", JWTParams{ID: testID, TTL: time.Minute}, "audience: at least one value is required"},
		{"empty audience value", JWTParams{ID: testID, Audience: []string{"a", ""}, TTL: time.Minute}, "audience[1]: empty"},
		{"too many audiences", JWTParams{ID: testID, Audience: make17Audiences(), TTL: time.Minute}, "audience: 17 values, at most 16 allowed"},
		{"audience over 256 bytes", JWTParams{ID: testID, Audience: []string{"a", strings.Repeat("b", 257)}, TTL: time.Minute}, "audience[1]: 257 bytes, at most 256 allowed"},
		{"trust domain id", JWTParams{ID: testTD.ID(), Audience: []string{"a"}, TTL: time.Minute}, "has no path"},
		{"id over 2048 bytes", JWTParams{ID: idOfLen(t, 2049), Audience: []string{"a"}, TTL: time.Minute}, "id: SPIFFE ID is 2049 bytes, at most 2048 allowed"},
		{"zero TTL", JWTParams{ID: testID, Audience: []string{"a"}}, "ttl: 0s must be positive"},
		{"overriding sub", JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute, ExtraClaims: map[string]any{"sub": "spiffe://example.org/admin"}}, `extra claims: "sub" is a registered claim`},
		{"overriding exp", JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute, ExtraClaims: map[string]any{"exp": 1}}, `extra claims: "exp" is a registered claim`},
		{"claim that is not JSON", JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute, ExtraClaims: map[string]any{"f": func() {}}}, "jwt claims:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := c.SignJWTSVID(context.Background(), tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestSign_CanceledContextSignsNothing(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.SignX509SVID(ctx, X509Params{ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour}); err == nil {
		t.Error("SignX509SVID with a canceled context succeeded")
	}
	if _, _, _, err := c.SignJWTSVID(ctx, JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute}); err == nil {
		t.Error("SignJWTSVID with a canceled context succeeded")
	}
}

func TestNew_EveryKeyTypeSignsVerifiableSVIDs(t *testing.T) {
	for _, kt := range svid.KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			e := newEnv(t, time.Now().Truncate(time.Second))
			c := e.start(t, func(cfg *Config) { cfg.KeyType, cfg.JWTKeyType = kt, kt })
			if got := keyTypeOf(c.X509Authorities()[0].PublicKey); got != kt {
				t.Errorf("CA key type = %s, want %s", got, kt)
			}
			for _, leafKT := range svid.KeyTypes() {
				chain, err := c.SignX509SVID(context.Background(), X509Params{ID: testID, PublicKey: mustKey(t, leafKT).Public(), TTL: time.Hour})
				if err != nil {
					t.Fatalf("SignX509SVID(%s leaf): %v", leafKT, err)
				}
				if err := verifyX509(chain, e.x509Bundle(t), e.clock.Now()); err != nil {
					t.Errorf("%s leaf does not verify: %v", leafKT, err)
				}
			}
			tok, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwtsvid.ParseAndValidate(tok, e.jwtBundle(t), []string{"a"}); err != nil {
				t.Errorf("JWT-SVID does not validate: %v", err)
			}
			for _, pub := range c.JWTAuthorities() {
				if got := keyTypeOf(pub); got != kt {
					t.Errorf("JWT key type = %s, want %s", got, kt)
				}
			}
		})
	}
}

func keyTypeOf(pub crypto.PublicKey) svid.KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name == "P-384" {
			return svid.KeyTypeECP384
		}
		return svid.KeyTypeECP256
	case *rsa.PublicKey:
		return svid.KeyTypeRSA2048
	}
	return ""
}

// unverifiedClaims reads a token's registered claims without checking the
// signature or the time, for tests on a fake clock far from the wall clock.
func unverifiedClaims(t *testing.T, tok string) jwt.Claims {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	var claims jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return claims
}
