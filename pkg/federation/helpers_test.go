package federation

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/store/bolt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	ownTD     = spiffeid.RequireTrustDomainFromString("example.org")
	partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")
	partnerID = spiffeid.RequireFromPath(partnerTD, "/nhid/server")
)

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial atomic.Int64

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testCA is a self-signed CA of a trust domain, as nhid and SPIRE make
// them: cA, keyCertSign, the trust domain's SPIFFE ID as URI SAN.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key := newKey(t)
	cert := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: td.Name() + " CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{td.ID().URL()},
	}, nil, key.Public(), key)
	return &testCA{cert: cert, key: key}
}

// svid issues an X.509-SVID for id, usable as a TLS server certificate.
func (ca *testCA) svid(t testing.TB, id spiffeid.ID) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	leaf := sign(t, &x509.Certificate{
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.cert, key.Public(), ca.key)
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// webCert issues a Web PKI certificate for 127.0.0.1 and localhost.
func (ca *testCA) webCert(t testing.TB) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	leaf := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.cert, key.Public(), ca.key)
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// document is the SPIFFE bundle document of td holding cas' certificates.
func document(t testing.TB, td spiffeid.TrustDomain, hint time.Duration, cas ...*testCA) []byte {
	t.Helper()
	sb := spiffebundle.New(td)
	for _, ca := range cas {
		sb.AddX509Authority(ca.cert)
	}
	if err := sb.AddJWTAuthority("jwt-1", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	if hint > 0 {
		sb.SetRefreshHint(hint)
	}
	sb.SetSequenceNumber(42)
	doc, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var mtimes atomic.Int64

// writeTo replaces a file and moves its modification time forward, so a
// change is seen even within the file system's timestamp granularity.
func writeTo(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Duration(mtimes.Add(1)) * time.Second)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// partner is a partner's bundle endpoint: a real HTTPS server whose
// certificate and answer the test changes as it goes.
type partner struct {
	srv  *httptest.Server
	cert atomic.Pointer[tls.Certificate]
	body atomic.Pointer[[]byte]
	hits atomic.Int32
}

func newPartner(t testing.TB, cert *tls.Certificate, doc []byte) *partner {
	t.Helper()
	p := &partner{}
	p.cert.Store(cert)
	p.body.Store(&doc)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*p.body.Load())
	}))
	// GetConfigForClient is consulted at every handshake, so the test can
	// rotate the certificate under a running server.
	p.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{*p.cert.Load()}}, nil
	}}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *partner) serve(doc []byte) { p.body.Store(&doc) }

// openStore is a real bbolt store in a temp dir.
func openStore(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "nhid.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
