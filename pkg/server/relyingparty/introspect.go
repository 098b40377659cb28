package relyingparty

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// tokenAlgorithms are the JWS algorithms of nhid's JWT keys.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256}

// maxIssuedAhead tolerates clock skew between servers sharing a store.
const maxIssuedAhead = time.Minute

// tokenTypeNA is the token_type of an introspected Txn-Token. RFC 7662
// section 2.2 takes token_type from the OAuth access token types (RFC 6749
// section 7.1); a Txn-Token is not an access token, which RFC 8693
// section 2.2.1 and the Txn-Token draft's response write "N_A".
// "txntoken+jwt" is the JWS typ, a media type, not a token type.
const tokenTypeNA = "N_A"

// txnTokenMediaType is ca.TxnTokenType as the full media type RFC 7515
// section 4.1.9 says a recipient compares.
const txnTokenMediaType = "application/" + ca.TxnTokenType

// txnClaims are the Txn-Token claims introspection reads.
type txnClaims struct {
	Txn   string           `json:"txn"`
	Sub   string           `json:"sub"`
	Aud   jwt.Audience     `json:"aud"`
	Iss   string           `json:"iss"`
	JTI   string           `json:"jti"`
	Exp   *jwt.NumericDate `json:"exp"`
	Iat   *jwt.NumericDate `json:"iat"`
	Scope string           `json:"scope"`
	ReqWL string           `json:"req_wl"`
	TCtx  json.RawMessage  `json:"tctx"`
	RCtx  json.RawMessage  `json:"rctx"`
}

// introspection is the RFC 7662 answer; an inactive token gets only
// {"active":false}.
type introspection struct {
	Active    bool            `json:"active"`
	Scope     string          `json:"scope,omitempty"`
	ClientID  string          `json:"client_id,omitempty"`
	TokenType string          `json:"token_type,omitempty"`
	Exp       int64           `json:"exp,omitempty"`
	Iat       int64           `json:"iat,omitempty"`
	Sub       string          `json:"sub,omitempty"`
	Aud       jwt.Audience    `json:"aud,omitempty"`
	Iss       string          `json:"iss,omitempty"`
	JTI       string          `json:"jti,omitempty"`
	Txn       string          `json:"txn,omitempty"`
	TCtx      json.RawMessage `json:"tctx,omitempty"`
	RCtx      json.RawMessage `json:"rctx,omitempty"`
	// AuthorizationDetails repeats tctx.authorization_details: RFC 9396
	// section 9.2 wants them as this top-level member.
	AuthorizationDetails json.RawMessage `json:"authorization_details,omitempty"`
}

// inactive explains internally why a token is not active; the caller
// only ever learns {"active":false}.
type inactive string

// introspect answers POST /introspect (RFC 7662).
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	client, ok := s.client(w, r)
	if !ok {
		return
	}
	token, ok := s.readToken(w, r)
	if !ok {
		return
	}
	resp, why, grantID, err := s.check(r.Context(), token)
	if err != nil {
		s.log.Error("introspection failed", telemetry.Error, err.Error(), telemetry.GrantID, grantID)
		writeError(w, http.StatusInternalServerError, "server_error", "the token could not be checked; retry later")
		return
	}
	answer := "active"
	if !resp.Active {
		answer = "inactive"
	}
	s.metrics.WithLabelValues(answer).Inc()
	s.log.Debug("token introspected", "client", client.String(), telemetry.GrantID, grantID,
		"active", resp.Active, telemetry.Reason, string(why))
	writeJSON(w, http.StatusOK, resp)
}

// client re-verifies the caller's certificate against the bundle as it is
// now (a connection outlives bundle changes) and returns its SPIFFE ID.
func (s *Server) client(w http.ResponseWriter, r *http.Request) (spiffeid.ID, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeError(w, http.StatusUnauthorized, "invalid_client", "an X.509-SVID of the trust domain is required as client certificate")
		return spiffeid.ID{}, false
	}
	id, err := s.cfg.Bundles.VerifyX509SVID(r.Context(), r.TLS.PeerCertificates)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "invalid_client", "client certificate: "+err.Error())
		return spiffeid.ID{}, false
	}
	return id, true
}

// readToken reads the one "token" parameter of a form-encoded body.
func (s *Server) readToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return "", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("the body exceeds %d bytes", s.cfg.MaxBodyBytes))
			return "", false
		}
		writeError(w, http.StatusBadRequest, "invalid_request", "the body is not a valid form")
		return "", false
	}
	values := r.PostForm["token"]
	switch {
	case len(values) == 0 || values[0] == "":
		writeError(w, http.StatusBadRequest, "invalid_request", "token: required")
		return "", false
	case len(values) > 1:
		writeError(w, http.StatusBadRequest, "invalid_request", "token: given more than once")
		return "", false
	}
	return values[0], true
}

// check verifies token and reads its grant. A token that is malformed,
// badly signed, expired, for another audience, or whose grant is unknown,
// ended or expired is inactive; err is only for the server's own failures.
func (s *Server) check(ctx context.Context, token string) (introspection, inactive, string, error) {
	parsed, err := jwt.ParseSigned(token, tokenAlgorithms)
	if err != nil {
		return introspection{}, "malformed", "", nil
	}
	if len(parsed.Headers) != 1 {
		return introspection{}, "malformed", "", nil
	}
	h := parsed.Headers[0]
	if !isTxnTokenType(h.ExtraHeaders[jose.HeaderType]) || h.KeyID == "" {
		return introspection{}, "not a Txn-Token", "", nil
	}
	keys, err := s.keys.current(ctx)
	if err != nil {
		return introspection{}, "", "", err
	}
	key, ok := keys.keys[h.KeyID]
	if !ok {
		return introspection{}, "unknown key", "", nil
	}
	var c txnClaims
	if err := parsed.Claims(key, &c); err != nil {
		return introspection{}, "bad signature", "", nil
	}
	now := s.cfg.Clock.Now()
	if why := s.checkClaims(c, now); why != "" {
		return introspection{}, why, c.Txn, nil
	}
	g, err := s.cfg.Grants.GetGrant(ctx, c.Txn)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return introspection{}, "unknown grant", c.Txn, nil
	case err != nil:
		return introspection{}, "", c.Txn, fmt.Errorf("read grant %s: %w", c.Txn, err)
	}
	if why := checkGrant(g, c, now); why != "" {
		return introspection{}, why, c.Txn, nil
	}
	// jti is the token's own (RFC 7519 section 4.1.7): one grant may be
	// issued several tokens, which share their txn.
	return introspection{
		Active: true, Scope: c.Scope, ClientID: c.ReqWL, TokenType: tokenTypeNA,
		Exp: c.Exp.Time().Unix(), Iat: c.Iat.Time().Unix(), Sub: c.Sub, Aud: c.Aud, Iss: c.Iss,
		JTI: c.JTI, Txn: c.Txn, TCtx: c.TCtx, RCtx: c.RCtx,
		AuthorizationDetails: authorizationDetails(c.TCtx),
	}, "", c.Txn, nil
}

// isTxnTokenType reports whether a typ header names the Txn-Token media
// type: RFC 7515 section 4.1.9 has a recipient read a typ without '/' as
// "application/<typ>", and media types compare case-insensitively (RFC
// 9110 section 8.3.1).
func isTxnTokenType(typ any) bool {
	s, ok := typ.(string)
	if !ok {
		return false
	}
	if !strings.Contains(s, "/") {
		s = "application/" + s
	}
	return strings.EqualFold(s, txnTokenMediaType)
}

// authorizationDetails returns tctx's authorization_details when it is a
// JSON array (RFC 9396 section 2), nil otherwise.
func authorizationDetails(tctx json.RawMessage) json.RawMessage {
	var t struct {
		Details json.RawMessage `json:"authorization_details"`
	}
	if len(tctx) == 0 || json.Unmarshal(tctx, &t) != nil {
		return nil
	}
	if d := bytes.TrimSpace(t.Details); len(d) > 0 && d[0] == '[' {
		return d
	}
	return nil
}

// checkClaims applies the token's own rules.
func (s *Server) checkClaims(c txnClaims, now time.Time) inactive {
	switch {
	case c.Txn == "" || c.Sub == "" || c.Exp == nil || c.Iat == nil:
		return "missing claims"
	case !c.Aud.Contains(s.cfg.Audience):
		return "wrong audience"
	case !now.Before(c.Exp.Time()):
		return "expired"
	case c.Iat.Time().After(now.Add(maxIssuedAhead)):
		return "issued in the future"
	}
	return ""
}

// checkGrant applies the grant's state: the record decides, so revocation
// and release take effect at once.
func checkGrant(g *typesv1.Grant, c txnClaims, now time.Time) inactive {
	switch {
	case g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
		return inactive("grant " + g.GetStatus().String())
	case now.Unix() >= g.GetExpiresAt():
		return "grant expired"
	case g.GetSpiffeId() != c.Sub:
		return "subject mismatch"
	}
	return ""
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError answers with an OAuth-style error document.
func writeError(w http.ResponseWriter, code int, errCode, desc string) {
	writeJSON(w, code, map[string]string{"error": errCode, "error_description": desc})
}
