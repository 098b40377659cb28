package workloadapi

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// rawJWT builds a compact JWS from the header and claims given, signed
// with key (ES256), with the HMAC secret hmacKey (HS256), or unsigned
// (alg none). It lets a test send what no well-behaved library would
// produce: validators must reject it by the JWT-SVID standard's rules.
type rawJWT struct {
	header  map[string]any
	claims  map[string]any
	key     *ecdsa.PrivateKey
	hmacKey []byte
}

func (r rawJWT) serialize(t *testing.T) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(r.header) + "." + enc(r.claims)
	var sig []byte
	switch {
	case r.key != nil:
		sum := sha256.Sum256([]byte(input))
		rr, ss, err := ecdsa.Sign(rand.Reader, r.key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		rr.FillBytes(sig[:32])
		ss.FillBytes(sig[32:])
	case r.hmacKey != nil:
		m := hmac.New(sha256.New, r.hmacKey)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestValidateJWTSVID_AppliesEveryRuleOfTheJWTSVIDStandard sends tokens
// that break one rule each (JWT-SVID §2 header, §3 claims, §4 validation;
// Workload API §6.2.3, §6.3) and checks that each is refused with
// InvalidArgument, as SPIRE does, while conforming variants validate.
func TestValidateJWTSVID_AppliesEveryRuleOfTheJWTSVIDStandard(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	raw := env.srv.rawClient(t)

	now := time.Now().Unix()
	header := func(over map[string]any) map[string]any {
		h := map[string]any{"alg": "ES256", "kid": env.ca.jwtKID, "typ": "JWT"}
		for k, v := range over {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return h
	}
	claims := func(over map[string]any) map[string]any {
		c := map[string]any{"sub": "spiffe://example.org/web", "aud": []string{"db"}, "exp": now + 300, "iat": now}
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	pubDER, err := x509.MarshalPKIXPublicKey(env.ca.jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	strangerKey := newKey(t)

	tests := []struct {
		name     string
		token    rawJWT
		wantCode codes.Code
		wantMsg  string // part of the status message
	}{
		{"conforming", rawJWT{header: header(nil), claims: claims(nil), key: env.ca.jwtKey}, codes.OK, ""},
		{"typ JOSE", rawJWT{header: header(map[string]any{"typ": "JOSE"}), claims: claims(nil), key: env.ca.jwtKey}, codes.OK, ""},
		{"no typ", rawJWT{header: header(map[string]any{"typ": nil}), claims: claims(nil), key: env.ca.jwtKey}, codes.OK, ""},
		{"aud as a single string", rawJWT{header: header(nil), claims: claims(map[string]any{"aud": "db"}), key: env.ca.jwtKey}, codes.OK, ""},
		{"alg none", rawJWT{header: header(map[string]any{"alg": "none"}), claims: claims(nil)}, codes.InvalidArgument, "unable to parse JWT token"},
		{"alg HS256 keyed with the public key", rawJWT{header: header(map[string]any{"alg": "HS256"}), claims: claims(nil), hmacKey: pubDER}, codes.InvalidArgument, "unable to parse JWT token"},
		{"typ other than JWT or JOSE", rawJWT{header: header(map[string]any{"typ": "at+jwt"}), claims: claims(nil), key: env.ca.jwtKey}, codes.InvalidArgument, "token header type"},
		{"no kid", rawJWT{header: header(map[string]any{"kid": nil}), claims: claims(nil), key: env.ca.jwtKey}, codes.InvalidArgument, "missing key id"},
		{"unknown kid", rawJWT{header: header(map[string]any{"kid": "nope"}), claims: claims(nil), key: env.ca.jwtKey}, codes.InvalidArgument, "no JWT authority"},
		{"known kid, other key", rawJWT{header: header(nil), claims: claims(nil), key: strangerKey}, codes.InvalidArgument, "unable to get claims"},
		{"no sub", rawJWT{header: header(nil), claims: claims(map[string]any{"sub": nil}), key: env.ca.jwtKey}, codes.InvalidArgument, "missing subject"},
		{"sub not a SPIFFE ID", rawJWT{header: header(nil), claims: claims(map[string]any{"sub": "web"}), key: env.ca.jwtKey}, codes.InvalidArgument, "invalid subject"},
		{"sub with an uppercase trust domain", rawJWT{header: header(nil), claims: claims(map[string]any{"sub": "spiffe://EXAMPLE.org/web"}), key: env.ca.jwtKey}, codes.InvalidArgument, "invalid subject"},
		{"sub of a trust domain without a bundle", rawJWT{header: header(nil), claims: claims(map[string]any{"sub": "spiffe://elsewhere.example/web"}), key: env.ca.jwtKey}, codes.InvalidArgument, "no bundle found"},
		{"no aud", rawJWT{header: header(nil), claims: claims(map[string]any{"aud": nil}), key: env.ca.jwtKey}, codes.InvalidArgument, "expected audience"},
		{"aud without the audience", rawJWT{header: header(nil), claims: claims(map[string]any{"aud": []string{"cache", "queue"}}), key: env.ca.jwtKey}, codes.InvalidArgument, "expected audience"},
		{"no exp", rawJWT{header: header(nil), claims: claims(map[string]any{"exp": nil}), key: env.ca.jwtKey}, codes.InvalidArgument, "missing exp"},
		{"expired", rawJWT{header: header(nil), claims: claims(map[string]any{"exp": now - 600, "iat": now - 900}), key: env.ca.jwtKey}, codes.InvalidArgument, "expired"},
		{"not valid yet (nbf)", rawJWT{header: header(nil), claims: claims(map[string]any{"nbf": now + 600}), key: env.ca.jwtKey}, codes.InvalidArgument, "not valid yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw.ValidateJWTSVID(withHeader(testContext(t)),
				&workload.ValidateJWTSVIDRequest{Audience: "db", Svid: tt.token.serialize(t)})
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Fatalf("ValidateJWTSVID = %v %q, want %v containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

// TestValidateJWTSVID_ReturnsEveryClaimWithItsJSONType checks the claims
// Struct (Workload API §6.2.3: all claims of the payload; SPIFFE claims
// required): numbers stay numbers, aud keeps the form it has in the token,
// and nested values keep their structure.
func TestValidateJWTSVID_ReturnsEveryClaimWithItsJSONType(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	raw := env.srv.rawClient(t)
	now := time.Now().Unix()
	base := map[string]any{
		"sub": "spiffe://example.org/web", "exp": now + 300, "iat": now, "nbf": now - 5, "jti": "j1",
		"purpose": "reconcile invoices", "n": 1.5, "ok": true, "none": nil,
		"tags": []any{"a", 2.0}, "ctx": map[string]any{"k": "v"},
	}
	for _, aud := range []any{"db", []any{"db"}, []any{"db", "cache"}} {
		t.Run(strings.ReplaceAll(strings.Trim(mustJSON(t, aud), `[]"`), `","`, "+"), func(t *testing.T) {
			claims := map[string]any{"aud": aud}
			for k, v := range base {
				claims[k] = v
			}
			token := rawJWT{header: map[string]any{"alg": "ES256", "kid": env.ca.jwtKID, "typ": "JWT"}, claims: claims, key: env.ca.jwtKey}
			resp, err := raw.ValidateJWTSVID(withHeader(testContext(t)),
				&workload.ValidateJWTSVIDRequest{Audience: "db", Svid: token.serialize(t)})
			if err != nil {
				t.Fatalf("ValidateJWTSVID: %v", err)
			}
			// What a JSON decoder makes of the payload is what the
			// Struct must hold: JSON and Struct share their value types.
			var want map[string]any
			if err := json.Unmarshal([]byte(mustJSON(t, claims)), &want); err != nil {
				t.Fatal(err)
			}
			wantStruct, err := structpb.NewStruct(want)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantStruct, resp.GetClaims(), protoCmp()); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if resp.GetSpiffeId() != "spiffe://example.org/web" {
				t.Errorf("spiffe_id = %q", resp.GetSpiffeId())
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
