package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
)

// upstream is a CA read from disk that signs this CA's intermediates.
type upstream struct {
	key  crypto.Signer
	cert *x509.Certificate
	// intermediates are the certificates from cert (included when it is
	// not itself a root) up to, excluding, the root: SVID chains carry them.
	intermediates []*x509.Certificate
	// roots are the self-signed certificates of the file: the bundle's.
	roots []*x509.Certificate
	// notAfter is the earliest expiry along the chain; a CA signed under
	// it cannot verify beyond that.
	notAfter time.Time
}

// loadUpstream reads and checks the upstream CA files at now. Errors name
// the Config field of the file at fault.
func loadUpstream(certFile, keyFile string, now time.Time) (*upstream, error) {
	certs, err := readCertsPEM(certFile)
	if err != nil {
		return nil, fmt.Errorf("UpstreamCertFile %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("UpstreamKeyFile: %w", err)
	}
	key, err := svid.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("UpstreamKeyFile %s: %w", keyFile, err)
	}
	cert := certs[0]
	if !svid.KeyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("UpstreamKeyFile %s: key does not match the first certificate of UpstreamCertFile %s", keyFile, certFile)
	}
	if err := checkUpstreamCert(cert, now); err != nil {
		return nil, fmt.Errorf("UpstreamCertFile %s: %w", certFile, err)
	}
	up, err := buildUpstreamChain(cert, certs, now)
	if err != nil {
		return nil, fmt.Errorf("UpstreamCertFile %s: %w", certFile, err)
	}
	up.key = key
	return up, nil
}

func readCertsPEM(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return svid.CertificatesInPEM(data)
}

// checkUpstreamCert makes sure the upstream may sign a CA now.
func checkUpstreamCert(cert *x509.Certificate, now time.Time) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return errors.New("first certificate is not a CA (basicConstraints cA=false)")
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("first certificate lacks the keyCertSign key usage")
	case cert.MaxPathLen == 0 && cert.MaxPathLenZero:
		return errors.New("first certificate has pathLenConstraint 0, so it cannot sign a CA")
	case now.Before(cert.NotBefore):
		return fmt.Errorf("first certificate is not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(cert.NotAfter):
		return fmt.Errorf("first certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// buildUpstreamChain verifies cert up to a self-signed root among certs.
func buildUpstreamChain(cert *x509.Certificate, certs []*x509.Certificate, now time.Time) (*upstream, error) {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	haveRoot := false
	for _, c := range certs {
		if isSelfSigned(c) {
			roots.AddCert(c)
			haveRoot = true
		} else {
			inters.AddCert(c)
		}
	}
	if !haveRoot {
		return nil, errors.New("no self-signed root certificate in the file: append the upstream chain up to its root")
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("first certificate does not chain to a root in the file: %w", err)
	}
	// Every root the certificate chains to is published (cross-signed
	// upstreams have several); the first chain is the one SVIDs carry.
	up := &upstream{cert: cert}
	for _, ch := range chains {
		if root := ch[len(ch)-1]; !hasAnchor(up.roots, root) {
			up.roots = append(up.roots, root)
		}
	}
	chain := chains[0]
	if len(chain) > 1 {
		up.intermediates = chain[:len(chain)-1]
	}
	if err := checkSigningCerts(up.intermediates); err != nil {
		return nil, err
	}
	up.notAfter = cert.NotAfter
	for _, c := range chain {
		if c.NotAfter.Before(up.notAfter) {
			up.notAfter = c.NotAfter
		}
	}
	return up, nil
}

// checkSigningCerts checks the upstream certificates that every SVID chain
// carries (the roots stay in the bundle) against the X509-SVID rules for
// signing certificates: keyUsage with keyCertSign (§3.2, §4.3; RFC 5280
// lets a CA omit keyUsage, but go-spiffe's client refuses an X509SVIDResponse
// whose chain has such a certificate, so every workload would be refused),
// and no SPIFFE ID with a path (§3.2). crypto/x509 has already checked cA.
func checkSigningCerts(certs []*x509.Certificate) error {
	for _, c := range certs {
		name := c.Subject.String()
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Errorf("certificate %q goes into every SVID chain but has no keyCertSign key usage, which SPIFFE clients require of signing certificates (X509-SVID §4.3): reissue it with keyUsage keyCertSign", name)
		}
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			if id, err := spiffeid.FromURI(u); err != nil || id.Path() != "" {
				return fmt.Errorf("certificate %q goes into every SVID chain but its URI SAN %q is not a SPIFFE ID without a path, as a signing certificate's must be (X509-SVID §3.2)", name, u)
			}
		}
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
