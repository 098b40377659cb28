package ca

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/svid"
)

// TestSignJWTSVID_AudienceIsAStringForOneValueAndAnArrayForSeveral reads
// the raw payload: a single audience (what JWT-SVID §3.2 and §7.2
// recommend) is a JSON string, as in SPIRE's tokens, several are an array
// (RFC 7519 §4.1.3 allows both forms). Either way the token validates with
// go-spiffe for each of its audiences.
func TestSignJWTSVID_AudienceIsAStringForOneValueAndAnArrayForSeveral(t *testing.T) {
	e := newEnv(t, time.Now())
	c := e.start(t)
	tests := []struct {
		audience []string
		wantAud  string // the raw JSON of the claim
	}{
		{[]string{"db"}, `"db"`},
		{[]string{"db", "cache"}, `["db","cache"]`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.audience, "+"), func(t *testing.T) {
			tok, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: tt.audience, TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(rawPayload(t, tok)["aud"]); got != tt.wantAud {
				t.Errorf("aud = %s, want %s", got, tt.wantAud)
			}
			for _, aud := range tt.audience {
				sv, err := jwtsvid.ParseAndValidate(tok, e.jwtBundle(t), []string{aud})
				if err != nil {
					t.Fatalf("jwtsvid.ParseAndValidate for %q: %v", aud, err)
				}
				if diff := cmp.Diff(tt.audience, sv.Audience); diff != "" {
					t.Errorf("audience (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestSign_IDOfTheLongestSupportedLengthIsSigned checks the other side of
// the 2048-byte bound (SPIFFE-ID §2.3): an ID of exactly that length gives
// an X.509-SVID and a JWT-SVID that go-spiffe accepts.
func TestSign_IDOfTheLongestSupportedLengthIsSigned(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	id := idOfLen(t, svid.MaxSPIFFEIDLen)
	chain, err := c.SignX509SVID(context.Background(), X509Params{ID: id, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour})
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	got, _, err := x509svid.ParseAndVerify(rawChain(chain), e.x509Bundle(t), x509svid.WithTime(e.clock.Now()))
	if err != nil {
		t.Fatalf("x509svid.ParseAndVerify: %v", err)
	}
	if got != id {
		t.Errorf("X.509-SVID ID = %d bytes, want %d", len(got.String()), len(id.String()))
	}
	if _, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: id, Audience: []string{"db"}, TTL: time.Minute}); err != nil {
		t.Fatalf("SignJWTSVID: %v", err)
	}
}

// idOfLen is a SPIFFE ID of testTD exactly n bytes long.
func idOfLen(t *testing.T, n int) spiffeid.ID {
	t.Helper()
	prefix := testTD.IDString() + "/"
	return spiffeid.RequireFromString(prefix + strings.Repeat("a", n-len(prefix)))
}

func make17Audiences() []string {
	out := make([]string, 17)
	for i := range out {
		out[i] = fmt.Sprintf("aud%d", i)
	}
	return out
}

// rawPayload decodes a compact JWS payload without verifying it, keeping
// each claim's JSON as it is.
func rawPayload(t *testing.T, tok string) map[string]json.RawMessage {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("payload: %v", err)
	}
	return out
}

func rawChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}
