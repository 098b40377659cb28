// Package agenttest provides what the agent's unit tests run against: a
// test CA and a fake of the server's agent API on a real gRPC Unix socket,
// for tests that need a fake clock or injected failures. Integration tests
// use the real server instead.
package agenttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/clock"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// CA signs X.509-SVIDs and JWT-SVIDs for one trust domain, at times taken
// from its clock.
type CA struct {
	TD     spiffeid.TrustDomain
	Cert   *x509.Certificate
	Key    crypto.Signer
	JWTKey *ecdsa.PrivateKey
	Clock  clock.Clock
}

// NewCA makes a self-signed CA valid for a year around clk's now.
func NewCA(t testing.TB, td spiffeid.TrustDomain, clk clock.Clock) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"nhid test"}, CommonName: "test CA"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{TD: td, Cert: cert, Key: key, JWTKey: jwtKey, Clock: clk}
}

// Bundle is the CA's trust bundle in its wire form.
func (ca *CA) Bundle() *typesv1.Bundle {
	pub, err := x509.MarshalPKIXPublicKey(ca.JWTKey.Public())
	if err != nil {
		panic(err)
	}
	return &typesv1.Bundle{
		TrustDomain:     ca.TD.Name(),
		X509Authorities: []*typesv1.X509Authority{{Asn1: ca.Cert.Raw}},
		JwtAuthorities:  []*typesv1.JWTAuthority{{KeyId: "test-jwt", PublicKey: pub}},
		SequenceNumber:  1,
	}
}

// SignCSR issues an X.509-SVID for id to the key in a PKCS#10 request,
// valid from now for ttl. It returns the chain, leaf first.
func (ca *CA) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames ...string) ([][]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := ca.Clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		NotBefore:             now,
		NotAfter:              now.Add(ttl),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return [][]byte{der}, nil
}

// SignJWT issues a JWT-SVID and returns it with its issue and expiry times.
func (ca *CA) SignJWT(sub string, aud []string, ttl time.Duration) (string, time.Time, time.Time, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ca.JWTKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "test-jwt"))
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	iat := ca.Clock.Now().Truncate(time.Second)
	exp := iat.Add(ttl)
	claims := jwt.Claims{Subject: sub, Audience: aud, IssuedAt: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(exp)}
	raw, err := json.Marshal(claims)
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	obj, err := signer.Sign(raw)
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	tok, err := obj.CompactSerialize()
	return tok, iat, exp, err
}
