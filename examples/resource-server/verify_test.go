package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// newTestVerifier is a verifier whose nhid-server is unreachable: a
// request that gets past the offline header checks fails at the key
// lookup, which tells the tests how far it got.
func newTestVerifier() *verifier {
	return newVerifier(&nhidClient{base: "https://127.0.0.1:1", http: &http.Client{Timeout: 5 * time.Second}}, "spiffe://example.org")
}

// callerCert is a self-signed certificate naming the caller's SPIFFE ID.
func callerCert(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org/agent/task")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve sends one request to the route /deploy with the given Txn-Token
// header values and returns the status and error message.
func serve(t *testing.T, tokens ...string) (int, string) {
	t.Helper()
	h := newHandler(map[string]string{"/deploy": "deploy:staging"}, newTestVerifier(), slog.New(slog.DiscardHandler))
	r := httptest.NewRequest(http.MethodPost, "/deploy", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{callerCert(t)}}
	for _, tok := range tokens {
		r.Header.Add(txnTokenHeader, tok)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w.Code, body.Error
}

// token signs a Txn-Token-shaped JWT with a fresh key under typ.
func token(t *testing.T, typ string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", "k1")
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(map[string]any{"txn": "g", "sub": "spiffe://example.org/agent/task"}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestServeRoute_TxnTokenHeaderHoldsExactlyOneToken: the Txn-Token header
// value MUST be exactly one Txn-Token (draft-ietf-oauth-transaction-tokens,
// "Txn-Token HTTP Header"); a request with two is malformed, not served
// with whichever came first.
func TestServeRoute_TxnTokenHeaderHoldsExactlyOneToken(t *testing.T) {
	tok := token(t, txnTokenType)
	for _, tc := range []struct {
		name     string
		tokens   []string
		wantCode int
	}{
		{"none", nil, http.StatusUnauthorized},
		{"two header fields", []string{tok, tok}, http.StatusBadRequest},
		{"two tokens in one field", []string{tok + ", " + tok}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, msg := serve(t, tc.tokens...); code != tc.wantCode {
				t.Errorf("status %d (%s), want %d", code, msg, tc.wantCode)
			}
		})
	}
}

// TestVerify_TypIsComparedAsAMediaType: RFC 7515 section 4.1.9 has a
// recipient read a typ without '/' as "application/<typ>", and media
// types compare case-insensitively; other types are not Txn-Tokens.
func TestVerify_TypIsComparedAsAMediaType(t *testing.T) {
	const notTxn = "is not a Transaction Token"
	for _, tc := range []struct {
		typ     string
		wantTxn bool
	}{
		{"txntoken+jwt", true},
		{"application/txntoken+jwt", true},
		{"TxnToken+JWT", true},
		{"JWT", false},
		{"application/at+jwt", false},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			_, msg := serve(t, token(t, tc.typ))
			if got := !strings.Contains(msg, notTxn); got != tc.wantTxn {
				t.Errorf("typ %q: refused with %q; taken for a Txn-Token = %v, want %v", tc.typ, msg, got, tc.wantTxn)
			}
		})
	}
}
