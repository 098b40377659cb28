package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

const (
	// txnTokenHeader carries the token (draft-ietf-oauth-transaction-tokens).
	txnTokenHeader = "Txn-Token"
	// txnTokenType is the JWS typ of Transaction Tokens.
	txnTokenType = "txntoken+jwt"
	// maxIssuedAhead tolerates clock skew with nhid-server.
	maxIssuedAhead = time.Minute
)

// algorithms are the JWS algorithms of nhid's JWT keys.
var algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256}

// txnClaims are the claims checked here; all of them are returned too.
type txnClaims struct {
	Txn   string           `json:"txn"`
	Sub   string           `json:"sub"`
	Aud   jwt.Audience     `json:"aud"`
	Exp   *jwt.NumericDate `json:"exp"`
	Iat   *jwt.NumericDate `json:"iat"`
	Scope string           `json:"scope"`
}

// refusal is why a request is not served, and its HTTP status.
type refusal struct {
	status int
	msg    string
}

// verifier checks Transaction Tokens.
type verifier struct {
	nhid     *nhidClient
	audience string
}

func newVerifier(nhid *nhidClient, audience string) *verifier {
	return &verifier{nhid: nhid, audience: audience}
}

// verify checks token for a caller holding the SPIFFE ID peer and a route
// needing scope. It returns every claim of an accepted token.
func (v *verifier) verify(ctx context.Context, token string, peer spiffeid.ID, scope string) (map[string]any, *refusal) {
	parsed, err := jwt.ParseSigned(token, algorithms)
	if err != nil || len(parsed.Headers) != 1 {
		return nil, &refusal{http.StatusUnauthorized, "the Txn-Token is not a signed JWT"}
	}
	h := parsed.Headers[0]
	if !isTxnTokenType(h.ExtraHeaders[jose.HeaderType]) || h.KeyID == "" {
		return nil, &refusal{http.StatusUnauthorized, "the Txn-Token is not a Transaction Token (typ " + txnTokenType + " with a kid)"}
	}
	key, err := v.nhid.key(ctx, h.KeyID)
	if err != nil {
		return nil, &refusal{http.StatusUnauthorized, "the Txn-Token's signing key is not in the trust domain's JWKS"}
	}
	var c txnClaims
	all := map[string]any{}
	if err := parsed.Claims(key, &c, &all); err != nil {
		return nil, &refusal{http.StatusUnauthorized, "the Txn-Token's signature does not verify"}
	}
	if r := v.checkClaims(c, peer, scope, time.Now()); r != nil {
		return nil, r
	}
	// Offline checks passed; only nhid-server knows whether the grant was
	// revoked or released since.
	in, err := v.nhid.introspect(ctx, token)
	switch {
	case err != nil:
		return nil, &refusal{http.StatusServiceUnavailable, "cannot check the grant with nhid-server; retry later"}
	case !in.Active:
		return nil, &refusal{http.StatusUnauthorized, "the grant is no longer active (revoked, released or expired)"}
	case !hasScope(in.Scope, scope):
		return nil, &refusal{http.StatusForbidden, "the grant does not hold scope " + scope}
	}
	return all, nil
}

func (v *verifier) checkClaims(c txnClaims, peer spiffeid.ID, scope string, now time.Time) *refusal {
	switch {
	case c.Txn == "" || c.Sub == "" || c.Exp == nil || c.Iat == nil:
		return &refusal{http.StatusUnauthorized, "the Txn-Token lacks txn, sub, exp or iat"}
	case !c.Aud.Contains(v.audience):
		return &refusal{http.StatusUnauthorized, "the Txn-Token is not for audience " + v.audience}
	case !now.Before(c.Exp.Time()):
		return &refusal{http.StatusUnauthorized, "the Txn-Token has expired"}
	case c.Iat.Time().After(now.Add(maxIssuedAhead)):
		return &refusal{http.StatusUnauthorized, "the Txn-Token was issued in the future"}
	case c.Sub != peer.String():
		return &refusal{http.StatusForbidden, "the Txn-Token was issued to " + c.Sub + ", not to the caller " + peer.String()}
	case !hasScope(c.Scope, scope):
		return &refusal{http.StatusForbidden, "the Txn-Token does not grant scope " + scope}
	}
	return nil
}

func hasScope(scopes, want string) bool { return slices.Contains(strings.Fields(scopes), want) }

// isTxnTokenType reports whether a typ header names the Txn-Token media
// type: RFC 7515 section 4.1.9 has a recipient read a typ without '/' as
// "application/<typ>", and media types compare case-insensitively.
func isTxnTokenType(typ any) bool {
	s, ok := typ.(string)
	if !ok {
		return false
	}
	if !strings.Contains(s, "/") {
		s = "application/" + s
	}
	return strings.EqualFold(s, "application/"+txnTokenType)
}

// newHandler serves each route to callers whose token grants its scope.
func newHandler(routes map[string]string, v *verifier, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for path, scope := range routes {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			serveRoute(w, r, path, scope, v, log)
		})
	}
	return mux
}

func serveRoute(w http.ResponseWriter, r *http.Request, path, scope string, v *verifier, log *slog.Logger) {
	// The TLS layer accepted only X.509-SVIDs of the trust domain.
	peer, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"ok": false, "error": "no SPIFFE ID in the client certificate"})
		return
	}
	log = log.With("path", path, "caller", peer.String())
	tokens := r.Header.Values(txnTokenHeader)
	if len(tokens) == 0 || tokens[0] == "" {
		log.Info("request refused", "reason", "no Txn-Token")
		writeJSON(w, http.StatusUnauthorized, map[string]any{"ok": false, "error": "a Txn-Token header is required"})
		return
	}
	// The header's value MUST be exactly one Txn-Token (draft-ietf-oauth-
	// transaction-tokens): two fields, or two values joined by a comma (a
	// JWS has none), are not served with whichever comes first.
	if len(tokens) > 1 || strings.Contains(tokens[0], ",") {
		log.Info("request refused", "reason", "more than one Txn-Token")
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "the Txn-Token header must hold exactly one token"})
		return
	}
	token := tokens[0]
	claims, ref := v.verify(r.Context(), token, peer, scope)
	if ref != nil {
		log.Info("request refused", "reason", ref.msg)
		writeJSON(w, ref.status, map[string]any{"ok": false, "error": ref.msg})
		return
	}
	log.Info("request served", "grant_id", claims["txn"], "scope", scope)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "path": path, "scope": scope, "caller": peer.String(), "claims": claims})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
