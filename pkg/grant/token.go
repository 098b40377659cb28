package grant

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/ca"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Txn-Token claims nhid sets besides sub, iat and exp (which the CA sets).
// See docs/grants.md for their meaning.
const (
	ClaimTxn   = "txn"
	ClaimJTI   = "jti"
	ClaimAud   = "aud"
	ClaimIss   = "iss"
	ClaimScope = "scope"
	ClaimReqWL = "req_wl"
	ClaimTCtx  = "tctx"
	ClaimRCtx  = "rctx"
)

// sign issues g's Txn-Token for ttl (the CA may shorten it to its key's
// life) and returns it with its expiry.
func (s *Service) sign(ctx context.Context, g *typesv1.Grant, ttl time.Duration) (string, time.Time, error) {
	sub, err := spiffeid.FromString(g.GetSpiffeId())
	if err != nil {
		return "", time.Time{}, fmt.Errorf("grant %s: subject: %w", g.GetId(), err)
	}
	claims, err := s.claims(g)
	if err != nil {
		return "", time.Time{}, err
	}
	token, _, exp, err := s.signer.SignTxnToken(ctx, ca.TxnParams{Subject: sub, TTL: ttl, Claims: claims})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign Txn-Token of grant %s: %w", g.GetId(), err)
	}
	return token, exp, nil
}

// claims are g's Txn-Token claims but sub, iat and exp. tctx is the
// transaction context that stays with the call chain (what the task is);
// rctx the request context (where the request came from).
func (s *Service) claims(g *typesv1.Grant) (map[string]any, error) {
	tctx := map[string]any{
		"purpose": g.GetPurpose(),
		"owner":   g.GetOwner(),
		"reason":  g.GetReason(),
	}
	if g.GetResource() != "" {
		tctx["resource"] = g.GetResource()
	}
	if g.GetAction() != "" {
		tctx["action"] = g.GetAction()
	}
	if d := g.GetAuthorizationDetails(); d != "" {
		var details json.RawMessage
		if err := json.Unmarshal([]byte(d), &details); err != nil {
			return nil, fmt.Errorf("grant %s: authorization_details: %w", g.GetId(), err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, details); err != nil {
			return nil, fmt.Errorf("grant %s: authorization_details: %w", g.GetId(), err)
		}
		tctx["authorization_details"] = json.RawMessage(compact.Bytes())
	}
	return map[string]any{
		ClaimTxn: g.GetId(),
		// Every token of the grant (a wait for an approved grant signs
		// another) is a JWT of its own: jti identifies it (RFC 7519
		// section 4.1.7), which introspection reports (RFC 7662 section
		// 2.2); txn is shared by the grant's tokens.
		ClaimJTI:   uuid.NewString(),
		ClaimAud:   s.aud,
		ClaimIss:   s.iss,
		ClaimScope: strings.Join(g.GetScopes(), " "),
		ClaimReqWL: g.GetNode(),
		ClaimTCtx:  tctx,
		ClaimRCtx:  map[string]any{"node": g.GetNode()},
	}, nil
}

// Audience is the "aud" of every Txn-Token the service issues: the trust
// domain's SPIFFE ID, such as "spiffe://example.org".
func (s *Service) Audience() string { return s.aud }

// tokenFor signs a token for a grant that became ACTIVE after waiting for
// approval, valid until the grant's expiry.
func (s *Service) tokenFor(ctx context.Context, g *typesv1.Grant) (Result, error) {
	ttl := time.Unix(g.GetExpiresAt(), 0).Sub(s.clock.Now())
	if ttl <= 0 {
		return Result{Grant: g}, nil
	}
	token, _, err := s.sign(ctx, g, ttl)
	if err != nil {
		return Result{}, err
	}
	return Result{Grant: g, Token: token}, nil
}
