package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// Bounds on the audience of a JWT-SVID. The JWT-SVID standard (§3.2,
// §7.2) strongly recommends a single audience; these bounds keep a token
// small whatever a workload asks for. The server's MintJWTSVID refuses
// requests past them, so the agent's Workload API applies the same bounds
// and answers InvalidArgument itself: relayed as a failed mint, the
// refusal would reach the workload as Unavailable, which clients retry
// forever (SPIFFE Workload Endpoint §6).
const (
	MaxJWTAudiences   = 16
	MaxJWTAudienceLen = 256
)

// JWTAudienceClaim is the value of the "aud" claim for audience: the
// single value as a string when there is one, an array otherwise. RFC 7519
// §4.1.3 allows both forms and every JWT library reads both, but some
// validators written against SPIRE's tokens (which use the string form for
// one audience, as go-jose does) compare "aud" as a string.
func JWTAudienceClaim(audience []string) any {
	if len(audience) == 1 {
		return audience[0]
	}
	return append([]string(nil), audience...)
}

// JWTAlgorithm returns the JWS algorithm nhid uses with pub: ES256 for
// P-256, ES384 for P-384, RS256 for RSA. These are in the JWT-SVID
// standard's list and in every common JOSE library.
func JWTAlgorithm(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	if err := CheckPublicKey(pub); err != nil {
		return "", fmt.Errorf("jwt key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name == "P-384" {
			return jose.ES384, nil
		}
		return jose.ES256, nil
	case *rsa.PublicKey:
		return jose.RS256, nil
	}
	// CheckPublicKey admits nothing else.
	return "", fmt.Errorf("jwt key: type %T has no algorithm", pub)
}

// JWTSigner signs JWTs with one key under one key id. It is safe for
// concurrent use and cheaper than SignJWT when a key signs many tokens.
type JWTSigner struct {
	signer jose.Signer
	alg    jose.SignatureAlgorithm
}

// NewJWTSigner prepares signing with key, whose tokens carry keyID as
// "kid" and "JWT" as "typ" in their protected header.
func NewJWTSigner(key crypto.Signer, keyID string) (*JWTSigner, error) {
	return NewTypedJWTSigner(key, keyID, "JWT")
}

// NewTypedJWTSigner is NewJWTSigner with another "typ" header, such as
// "txntoken+jwt" for OAuth Transaction Tokens, so that one kind of token
// can never be mistaken for another signed by the same key.
func NewTypedJWTSigner(key crypto.Signer, keyID, typ string) (*JWTSigner, error) {
	if typ == "" {
		return nil, errors.New("jwt type: empty")
	}
	if key == nil {
		return nil, errors.New("jwt key: missing")
	}
	if keyID == "" {
		return nil, errors.New("jwt key id: empty")
	}
	alg, err := JWTAlgorithm(key.Public())
	if err != nil {
		return nil, err
	}
	var joseKey any
	switch k := key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		joseKey = k
	default:
		// Keys held elsewhere (an HSM, a KMS) sign through crypto.Signer.
		joseKey = cryptosigner.Opaque(key)
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", keyID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: joseKey}, opts)
	if err != nil {
		return nil, fmt.Errorf("jwt signer: %w", err)
	}
	return &JWTSigner{signer: signer, alg: alg}, nil
}

// Algorithm is the JWS algorithm of the signer's tokens.
func (s *JWTSigner) Algorithm() jose.SignatureAlgorithm { return s.alg }

// Sign serialises claims as the JWT payload and returns the compact JWS.
// Claims are signed as given: the caller sets and checks sub, aud, exp.
func (s *JWTSigner) Sign(claims map[string]any) (string, error) {
	if len(claims) == 0 {
		return "", errors.New("jwt claims: empty")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jwt claims: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("serialize jwt: %w", err)
	}
	return token, nil
}

// SignJWT signs claims with key: alg from the key (see JWTAlgorithm),
// header typ "JWT" and kid keyID.
func SignJWT(key crypto.Signer, keyID string, claims map[string]any) (string, error) {
	s, err := NewJWTSigner(key, keyID)
	if err != nil {
		return "", err
	}
	return s.Sign(claims)
}

// JWTKeyID returns the key id nhid gives a JWT signing key: its RFC 7638
// JWK thumbprint (SHA-256, base64url). Deriving the id from the key keeps
// ids unique across servers sharing one bundle without coordination.
func JWTKeyID(pub crypto.PublicKey) (string, error) {
	if err := CheckPublicKey(pub); err != nil {
		return "", fmt.Errorf("jwt key: %w", err)
	}
	sum, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("jwt key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}
