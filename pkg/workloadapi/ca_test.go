package workloadapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testCA is a real two-level X.509 CA (root → intermediate) and a JWT
// signing key for one trust domain, minting SVIDs as the nhid server would.
type testCA struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
	jwtKey   *ecdsa.PrivateKey
	jwtKID   string
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	trustDomain := spiffeid.RequireTrustDomainFromString(td)
	rootKey := newKey(t)
	root := signCert(t, &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"nhid test"}, CommonName: td + " root"},
		URIs:                  []*url.URL{trustDomain.ID().URL()},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotAfter:              time.Now().Add(24 * time.Hour),
	}, nil, rootKey.Public(), rootKey)
	interKey := newKey(t)
	inter := signCert(t, &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"nhid test"}, CommonName: td + " intermediate"},
		URIs:                  []*url.URL{trustDomain.ID().URL()},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotAfter:              time.Now().Add(12 * time.Hour),
	}, root, interKey.Public(), rootKey)
	return &testCA{td: trustDomain, root: root, inter: inter, interKey: interKey, jwtKey: newKey(t), jwtKID: "jwt-" + td}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func signCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

// bundle is the trust domain's bundle: the root and the JWT key.
func (ca *testCA) bundle(t testing.TB) *spiffebundle.Bundle {
	t.Helper()
	b := spiffebundle.New(ca.td)
	b.AddX509Authority(ca.root)
	if err := b.AddJWTAuthority(ca.jwtKID, ca.jwtKey.Public()); err != nil {
		t.Fatalf("add JWT authority: %v", err)
	}
	return b
}

// mintX509 issues an X.509-SVID for id: leaf first, then the intermediate.
func (ca *testCA) mintX509(t testing.TB, id string) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	leaf := signCert(t, &x509.Certificate{
		URIs:                  []*url.URL{spiffeid.RequireFromString(id).URL()},
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotAfter:              time.Now().Add(time.Hour),
	}, ca.inter, key.Public(), ca.interKey)
	return []*x509.Certificate{leaf, ca.inter}, key
}

// mintJWT signs a JWT-SVID for id with ES256, the CA's key id and the
// entry's purpose as an extra claim.
func (ca *testCA) mintJWT(id string, audience []string, purpose string, ttl time.Duration) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ca.jwtKey, KeyID: ca.jwtKID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.Claims{
		Subject:  id,
		Audience: audience,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(ttl)),
	}
	return jwt.Signed(signer).Claims(claims).Claims(map[string]any{"purpose": purpose}).Serialize()
}
