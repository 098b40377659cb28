package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
)

// TxnTokenType is the "typ" header of OAuth Transaction Tokens
// (draft-ietf-oauth-transaction-tokens).
const TxnTokenType = "txntoken+jwt"

// TxnParams describes one Transaction Token to sign.
type TxnParams struct {
	// Subject becomes "sub"; it must be in the CA's trust domain and have
	// a path.
	Subject spiffeid.ID
	// TTL is the requested lifetime, > 0; it is capped by the remaining
	// life of the active JWT key, so the token never outlives the key that
	// verifies it.
	TTL time.Duration
	// Claims are the token's other claims. "txn" (a non-empty string) and
	// "aud" are required; "sub", "iat", "exp" and "nbf" are the CA's.
	Claims map[string]any
}

// txnClaimsSet are the claims SignTxnToken sets itself.
var txnClaimsSet = []string{"sub", "iat", "exp", "nbf"}

// txnSigner signs with one JWT key under the Transaction Token type.
type txnSigner struct {
	kid      string
	signer   *svid.JWTSigner
	notAfter time.Time
}

// SignTxnToken signs a Transaction Token with the active JWT key, the key
// of JWT-SVIDs: header typ "txntoken+jwt" and the key's kid, so relying
// parties find the key in the trust domain's JWT bundle. It sets sub, iat
// and exp (whole seconds) and returns iat and exp as times.
func (c *CA) SignTxnToken(ctx context.Context, p TxnParams) (token string, issuedAt, expiresAt time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	if err := c.checkTxnParams(p); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	s, err := c.txnSigner()
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	now := c.clock.Now()
	issuedAt = time.Unix(now.Unix(), 0)
	expiresAt = now.Add(p.TTL)
	if expiresAt.After(s.notAfter) {
		expiresAt = s.notAfter
	}
	expiresAt = time.Unix(expiresAt.Unix(), 0)
	if !expiresAt.After(issuedAt) {
		return "", time.Time{}, time.Time{}, fmt.Errorf("sign txn token: the active JWT key expired at %s", s.notAfter.UTC().Format(time.RFC3339))
	}
	claims := make(map[string]any, len(p.Claims)+3)
	for k, v := range p.Claims {
		claims[k] = v
	}
	claims["sub"] = p.Subject.String()
	claims["iat"] = issuedAt.Unix()
	claims["exp"] = expiresAt.Unix()
	token, err = s.signer.Sign(claims)
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("sign txn token for %s: %w", p.Subject, err)
	}
	return token, issuedAt, expiresAt, nil
}

func (c *CA) checkTxnParams(p TxnParams) error {
	if err := c.checkID(p.Subject); err != nil {
		return fmt.Errorf("subject: %w", err)
	}
	if p.TTL <= 0 {
		return fmt.Errorf("ttl: %s must be positive", p.TTL)
	}
	for _, name := range txnClaimsSet {
		if _, ok := p.Claims[name]; ok {
			return fmt.Errorf("claims: %q is set by the CA", name)
		}
	}
	if txn, _ := p.Claims["txn"].(string); txn == "" {
		return errors.New(`claims: "txn" must be a non-empty string`)
	}
	if p.Claims["aud"] == nil {
		return errors.New(`claims: "aud" is required`)
	}
	return nil
}

// txnSigner returns the signer of the active JWT key, building it the
// first time the key signs a Transaction Token.
func (c *CA) txnSigner() (*txnSigner, error) {
	active := c.view.Load().jwt
	if active == nil {
		return nil, errors.New("sign txn token: no active JWT key")
	}
	if s := c.txn.Load(); s != nil && s.kid == active.kid {
		return s, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := find(c.state.jwt, statusActive)
	if slot == nil || slot.key == nil {
		return nil, errors.New("sign txn token: no active JWT key")
	}
	signer, err := svid.NewTypedJWTSigner(slot.key, slot.id, TxnTokenType)
	if err != nil {
		return nil, fmt.Errorf("sign txn token: %w", err)
	}
	s := &txnSigner{kid: slot.id, signer: signer, notAfter: slot.notAfter}
	c.txn.Store(s)
	return s, nil
}
