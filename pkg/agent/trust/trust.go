// Package trust owns the agent's view of its trust domain's bundle: turning
// the bundle the server sends into go-spiffe's type after checking it (and
// the bundles of federated trust domains likewise), the
// bundle.pem file the agent keeps it in between runs, and a Source whose
// content can change under live TLS configurations as the CA rotates.
package trust

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/atomicfile"
	"github.com/nhid/nhid/pkg/svid"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// FromProto checks a bundle received from the server and converts it. It
// must be td's bundle and hold at least one X.509 authority; every
// authority must parse. Errors name the field at fault.
func FromProto(td spiffeid.TrustDomain, b *typesv1.Bundle) (*spiffebundle.Bundle, error) {
	if b == nil {
		return nil, errors.New("bundle: missing")
	}
	if b.GetTrustDomain() != td.Name() {
		return nil, fmt.Errorf("bundle.trust_domain: %q is not the agent's trust domain %q", b.GetTrustDomain(), td.Name())
	}
	if len(b.GetX509Authorities()) == 0 {
		return nil, errors.New("bundle.x509_authorities: must not be empty")
	}
	return convert(td, b)
}

// ErrOwnTrustDomain is returned by FederatedFromProto for a bundle that
// claims the agent's own trust domain: callers ignore it, since a
// federated bundle must never replace the agent's own roots.
var ErrOwnTrustDomain = errors.New("claims the agent's own trust domain")

// FederatedFromProto checks the bundle of a federated trust domain and
// converts it for the trust domain it names. Unlike the agent's own bundle
// it need not hold X.509 authorities: a partner may federate for
// JWT-SVIDs alone, and an empty bundle (a partner publishing no keys yet)
// trusts nothing rather than stalling the sync. own is the agent's trust
// domain; a bundle naming it fails with an error wrapping
// ErrOwnTrustDomain. Errors name the field at fault.
func FederatedFromProto(own spiffeid.TrustDomain, b *typesv1.Bundle) (*spiffebundle.Bundle, error) {
	if b == nil {
		return nil, errors.New("bundle: missing")
	}
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	switch {
	case err != nil:
		return nil, fmt.Errorf("bundle.trust_domain: %q: %w", b.GetTrustDomain(), err)
	case td.Name() != b.GetTrustDomain():
		return nil, fmt.Errorf("bundle.trust_domain: %q is not a trust domain name", b.GetTrustDomain())
	case td == own:
		return nil, fmt.Errorf("bundle.trust_domain: %q %w", td.Name(), ErrOwnTrustDomain)
	}
	return convert(td, b)
}

// convert parses every authority of b into a bundle for td.
func convert(td spiffeid.TrustDomain, b *typesv1.Bundle) (*spiffebundle.Bundle, error) {
	out := spiffebundle.New(td)
	for i, a := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("bundle.x509_authorities[%d]: %w", i, err)
		}
		out.AddX509Authority(cert)
	}
	for i, a := range b.GetJwtAuthorities() {
		if a.GetKeyId() == "" {
			return nil, fmt.Errorf("bundle.jwt_authorities[%d].key_id: must not be empty", i)
		}
		pub, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("bundle.jwt_authorities[%d].public_key: %w", i, err)
		}
		if err := out.AddJWTAuthority(a.GetKeyId(), pub); err != nil {
			return nil, fmt.Errorf("bundle.jwt_authorities[%d]: %w", i, err)
		}
	}
	if h := b.GetRefreshHint(); h > 0 {
		out.SetRefreshHint(time.Duration(h) * time.Second)
	}
	if b.GetSequenceNumber() > 0 {
		out.SetSequenceNumber(b.GetSequenceNumber())
	}
	return out, nil
}

// ReadPEM reads X.509 authorities for td from a PEM file of certificates,
// the format of --trust-bundle and of the bundle.pem the agent keeps.
func ReadPEM(td spiffeid.TrustDomain, path string) (*x509bundle.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust bundle: %w", err)
	}
	certs, err := svid.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("trust bundle %s: %w", path, err)
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}

// WritePEM stores the X.509 authorities of b at path (0644: a bundle is
// public), replacing the file atomically.
func WritePEM(path string, b x509bundle.Source, td spiffeid.TrustDomain) error {
	xb, err := b.GetX509BundleForTrustDomain(td)
	if err != nil {
		return fmt.Errorf("write trust bundle %s: %w", path, err)
	}
	var out []byte
	for _, c := range xb.X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return atomicfile.Write(path, out, 0o644)
}

// Source is an x509bundle.Source whose bundle can be replaced while TLS
// configurations built on it are in use. The zero value has no bundle.
type Source struct {
	b atomic.Pointer[spiffebundle.Bundle]
}

var _ x509bundle.Source = (*Source)(nil)

// Set makes b the current bundle. b must not be modified afterwards.
func (s *Source) Set(b *spiffebundle.Bundle) { s.b.Store(b) }

// Get returns the current bundle, or nil.
func (s *Source) Get() *spiffebundle.Bundle { return s.b.Load() }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := s.b.Load()
	if b == nil {
		return nil, fmt.Errorf("no trust bundle for %q yet", td.Name())
	}
	return b.GetX509BundleForTrustDomain(td)
}
