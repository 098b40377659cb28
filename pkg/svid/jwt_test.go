package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// opaqueKey hides the concrete key type, as an HSM-backed signer would.
type opaqueKey struct{ s crypto.Signer }

func (k opaqueKey) Public() crypto.PublicKey { return k.s.Public() }
func (k opaqueKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return k.s.Sign(r, d, o)
}

func TestJWTAlgorithm(t *testing.T) {
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		want    jose.SignatureAlgorithm
		wantErr string
	}{
		{"P-256 is ES256", mustKey(t, KeyTypeECP256).Public(), jose.ES256, ""},
		{"P-384 is ES384", mustKey(t, KeyTypeECP384).Public(), jose.ES384, ""},
		{"RSA is RS256", mustKey(t, KeyTypeRSA2048).Public(), jose.RS256, ""},
		{"P-521 is refused", p521.Public(), "", "ECDSA curve P-521 is not allowed"},
		{"Ed25519 is refused", edPub, "", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JWTAlgorithm(tt.pub)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("JWTAlgorithm = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestSignJWT_ValidatesAsAJWTSVID(t *testing.T) {
	tests := []struct {
		name    string
		key     crypto.Signer
		wantAlg string
	}{
		{"ec-p256", mustKey(t, KeyTypeECP256), "ES256"},
		{"ec-p384", mustKey(t, KeyTypeECP384), "ES384"},
		{"rsa-2048", mustKey(t, KeyTypeRSA2048), "RS256"},
		{"opaque crypto.Signer", opaqueKey{mustKey(t, KeyTypeECP256)}, "ES256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kid, err := JWTKeyID(tt.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			claims := map[string]any{
				"sub": testID.String(), "aud": []string{"db"},
				"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "purpose": "reads orders",
			}
			token, err := SignJWT(tt.key, kid, claims)
			if err != nil {
				t.Fatalf("SignJWT: %v", err)
			}
			bundle := jwtbundle.FromJWTAuthorities(testTD, map[string]crypto.PublicKey{kid: tt.key.Public()})
			sv, err := jwtsvid.ParseAndValidate(token, bundle, []string{"db"})
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
			if err != nil {
				t.Fatal(err)
			}
			h := tok.Headers[0]
			type facts struct{ ID, Alg, Kid, Typ, Purpose string }
			got := facts{sv.ID.String(), h.Algorithm, h.KeyID, h.ExtraHeaders[jose.HeaderType].(string), sv.Claims["purpose"].(string)}
			want := facts{testID.String(), tt.wantAlg, kid, "JWT", "reads orders"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("token (-want +got):\n%s", diff)
			}
			// JWT-SVID §2: no header but alg, kid and typ.
			var header map[string]any
			if err := json.Unmarshal(rawHeader(t, token), &header); err != nil {
				t.Fatal(err)
			}
			var names []string
			for k := range header {
				names = append(names, k)
			}
			slices.Sort(names)
			if diff := cmp.Diff([]string{"alg", "kid", "typ"}, names); diff != "" {
				t.Errorf("header parameters (-want +got):\n%s", diff)
			}
		})
	}
}

func rawHeader(t *testing.T, token string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignJWT_RejectsBadInput(t *testing.T) {
	key := mustKey(t, KeyTypeECP256)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name    string
		key     crypto.Signer
		kid     string
		claims  map[string]any
		wantErr string
	}{
		{"no key", nil, "k", map[string]any{"sub": "x"}, "jwt key: missing"},
		{"empty key id", key, "", map[string]any{"sub": "x"}, "jwt key id: empty"},
		{"Ed25519 key", edKey, "k", map[string]any{"sub": "x"}, "not allowed"},
		{"no claims", key, "k", nil, "jwt claims: empty"},
		{"claims that are not JSON", key, "k", map[string]any{"c": make(chan int)}, "jwt claims:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SignJWT(tt.key, tt.kid, tt.claims)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestJWTKeyID_IsAStableThumbprint(t *testing.T) {
	a, b := mustKey(t, KeyTypeECP256), mustKey(t, KeyTypeECP256)
	ka1, _ := JWTKeyID(a.Public())
	ka2, _ := JWTKeyID(a.Public())
	kb, _ := JWTKeyID(b.Public())
	if ka1 != ka2 || ka1 == kb || len(ka1) != 43 {
		t.Fatalf("key ids %q, %q, %q: want the same id for one key, different ids for two, 43 characters", ka1, ka2, kb)
	}
}

func TestJWTAudienceClaim_OneValueIsAStringSeveralAreAnArray(t *testing.T) {
	tests := []struct {
		audience []string
		want     string // JSON of the claim
	}{
		{[]string{"db"}, `"db"`},
		{[]string{"db", "cache"}, `["db","cache"]`},
	}
	for _, tt := range tests {
		in := append([]string(nil), tt.audience...)
		claim := JWTAudienceClaim(in)
		b, err := json.Marshal(claim)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("JWTAudienceClaim(%q) = %s, want %s", tt.audience, b, tt.want)
		}
		// The claim must not share the caller's slice.
		in[0] = "changed"
		if b2, _ := json.Marshal(claim); string(b2) != tt.want {
			t.Errorf("JWTAudienceClaim(%q) changed with its argument: %s", tt.audience, b2)
		}
	}
}
