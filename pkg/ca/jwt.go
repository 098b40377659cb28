package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
)

// JWTParams describes one JWT-SVID to sign.
type JWTParams struct {
	// ID is the subject; it must be in the CA's trust domain and have a path.
	ID spiffeid.ID
	// Audience is required: 1 to svid.MaxJWTAudiences non-empty values of
	// at most svid.MaxJWTAudienceLen bytes.
	Audience []string
	// TTL is the requested lifetime, > 0; it is capped by the remaining
	// life of the active JWT key.
	TTL time.Duration
	// ExtraClaims are added to the token; they may not set a registered
	// claim (iss, sub, aud, exp, nbf, iat, jti).
	ExtraClaims map[string]any
}

var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}

// SignJWTSVID signs a JWT-SVID with the active JWT key. The token carries
// sub, aud (see svid.JWTAudienceClaim), iat, exp and a random jti, plus
// p.ExtraClaims. Times are whole seconds, as in the token: issuedAt and
// expiresAt equal its iat and exp.
func (c *CA) SignJWTSVID(ctx context.Context, p JWTParams) (token string, issuedAt, expiresAt time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	if err := c.checkJWTParams(p); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	key := c.view.Load().jwt
	if key == nil {
		return "", time.Time{}, time.Time{}, errors.New("sign JWT-SVID: no active JWT key")
	}
	now := c.clock.Now()
	issuedAt = time.Unix(now.Unix(), 0)
	expiresAt = now.Add(p.TTL)
	if expiresAt.After(key.notAfter) {
		expiresAt = key.notAfter
	}
	expiresAt = time.Unix(expiresAt.Unix(), 0)
	if !expiresAt.After(issuedAt) {
		return "", time.Time{}, time.Time{}, fmt.Errorf("sign JWT-SVID: the active JWT key expired at %s", key.notAfter.UTC().Format(time.RFC3339))
	}
	jti, err := randomID()
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	claims := make(map[string]any, len(p.ExtraClaims)+5)
	for k, v := range p.ExtraClaims {
		claims[k] = v
	}
	claims["sub"] = p.ID.String()
	claims["aud"] = svid.JWTAudienceClaim(p.Audience)
	claims["iat"] = issuedAt.Unix()
	claims["exp"] = expiresAt.Unix()
	claims["jti"] = jti
	token, err = key.signer.Sign(claims)
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("sign JWT-SVID for %s: %w", p.ID, err)
	}
	c.metrics.jwtSigned.Inc()
	return token, issuedAt, expiresAt, nil
}

func (c *CA) checkJWTParams(p JWTParams) error {
	if err := c.checkID(p.ID); err != nil {
		return err
	}
	if len(p.Audience) == 0 {
		return errors.New("audience: at least one value is required")
	}
	if len(p.Audience) > svid.MaxJWTAudiences {
		return fmt.Errorf("audience: %d values, at most %d allowed", len(p.Audience), svid.MaxJWTAudiences)
	}
	for i, a := range p.Audience {
		switch {
		case a == "":
			return fmt.Errorf("audience[%d]: empty", i)
		case len(a) > svid.MaxJWTAudienceLen:
			return fmt.Errorf("audience[%d]: %d bytes, at most %d allowed", i, len(a), svid.MaxJWTAudienceLen)
		}
	}
	if p.TTL <= 0 {
		return fmt.Errorf("ttl: %s must be positive", p.TTL)
	}
	for _, name := range registeredClaims {
		if _, ok := p.ExtraClaims[name]; ok {
			return fmt.Errorf("extra claims: %q is a registered claim the CA sets", name)
		}
	}
	return nil
}
