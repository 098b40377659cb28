// Package federation owns nhid's side of SPIFFE federation
// (docs/federation.md): the SPIFFE bundle document and its conversion to
// and from the stored typesv1.Bundle, the bundle endpoint that serves this
// trust domain's bundle to partners, and the refresher that keeps
// partners' bundles current from their endpoints. It imports no server
// package, so the server, the admin API and tests share it.
package federation

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Limits of bundle documents and refresh intervals.
const (
	// MaxDocumentSize bounds a SPIFFE bundle document, fetched or given.
	MaxDocumentSize = 1 << 20
	// DefaultRefreshHint is the refresh interval of a bundle without a
	// hint, and the hint this server's endpoint publishes by default.
	DefaultRefreshHint = 5 * time.Minute
	// MinRefreshInterval and MaxRefreshInterval bound how often a
	// partner's bundle is fetched, whatever its hint says: a partner may
	// neither make us poll it every second nor stop us for a month.
	MinRefreshInterval = time.Minute
	MaxRefreshInterval = 24 * time.Hour
)

// ToSPIFFE converts a stored bundle to go-spiffe's type, with its refresh
// hint and sequence number. Every authority must parse; errors name the
// field at fault.
func ToSPIFFE(b *typesv1.Bundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("trust_domain: %q: %w", b.GetTrustDomain(), err)
	}
	out := spiffebundle.New(td)
	for i, a := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("x509_authorities[%d]: %w", i, err)
		}
		out.AddX509Authority(cert)
	}
	for i, a := range b.GetJwtAuthorities() {
		if a.GetKeyId() == "" {
			return nil, fmt.Errorf("jwt_authorities[%d].key_id: must not be empty", i)
		}
		key, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("jwt_authorities[%d].public_key (key id %q): %w", i, a.GetKeyId(), err)
		}
		if err := out.AddJWTAuthority(a.GetKeyId(), key); err != nil {
			return nil, fmt.Errorf("jwt_authorities[%d]: %w", i, err)
		}
	}
	if h := b.GetRefreshHint(); h > 0 {
		out.SetRefreshHint(time.Duration(h) * time.Second)
	}
	out.SetSequenceNumber(b.GetSequenceNumber())
	return out, nil
}

// FromSPIFFE converts go-spiffe's bundle to the stored form: X.509
// authorities in the document's order, JWT authorities by key id, the
// refresh hint in whole seconds. The sequence number is left 0: the store
// numbers the bundles it keeps, whatever a partner's document says.
func FromSPIFFE(sb *spiffebundle.Bundle) (*typesv1.Bundle, error) {
	out := &typesv1.Bundle{TrustDomain: sb.TrustDomain().Name()}
	for _, c := range sb.X509Authorities() {
		out.X509Authorities = append(out.X509Authorities, &typesv1.X509Authority{Asn1: c.Raw})
	}
	jwt := sb.JWTAuthorities()
	ids := make([]string, 0, len(jwt))
	for id := range jwt {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		der, err := x509.MarshalPKIXPublicKey(jwt[id])
		if err != nil {
			return nil, fmt.Errorf("JWT authority %q: %w", id, err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &typesv1.JWTAuthority{KeyId: id, PublicKey: der})
	}
	if h, ok := sb.RefreshHint(); ok && h > 0 {
		out.RefreshHint = int64(h / time.Second)
	}
	return out, nil
}

// Marshal encodes a stored bundle as a SPIFFE bundle document, the same
// bytes for the same bundle (marshalDocument). A positive refreshHint
// replaces the stored one: the endpoint publishes its own.
func Marshal(b *typesv1.Bundle, refreshHint time.Duration) ([]byte, error) {
	sb, err := ToSPIFFE(b)
	if err != nil {
		return nil, err
	}
	if refreshHint <= 0 {
		refreshHint, _ = sb.RefreshHint()
	}
	doc, err := marshalDocument(b.GetSequenceNumber(), sb, refreshHint)
	if err != nil {
		return nil, fmt.Errorf("encode SPIFFE bundle document: %w", err)
	}
	return doc, nil
}

// Parse decodes and checks a foreign SPIFFE bundle document said to be
// td's. It must be at most MaxDocumentSize and parse; the keys a client
// must ignore are ignored (normalize). What remains must hold at least
// one X.509 authority, every X.509 authority must be a CA certificate
// whose SPIFFE ID, if it has one, is in td, and the refresh hint must not
// be negative (one longer than a year counts as a year). The result has
// the trust domain set and sequence number 0.
func Parse(td spiffeid.TrustDomain, doc []byte) (*typesv1.Bundle, error) {
	if td.IsZero() {
		return nil, errors.New("bundle document: no trust domain given")
	}
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("bundle document: %d bytes, larger than the %d allowed", len(doc), MaxDocumentSize)
	}
	doc, hint, err := normalize(doc)
	if err != nil {
		return nil, err
	}
	sb, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, fmt.Errorf("bundle document: %w", err)
	}
	certs := sb.X509Authorities()
	if len(certs) == 0 {
		return nil, errors.New("bundle document: no X.509 authority (no key with use \"x509-svid\")")
	}
	for i, c := range certs {
		if err := checkAuthority(td, c); err != nil {
			return nil, fmt.Errorf("bundle document: X.509 authority %d (subject %q): %w", i, c.Subject.String(), err)
		}
	}
	out, err := FromSPIFFE(sb)
	if err != nil {
		return nil, fmt.Errorf("bundle document: %w", err)
	}
	out.RefreshHint = hint
	return out, nil
}

// maxDocumentHint bounds spiffe_refresh_hint as nhid keeps it: beyond it
// the seconds would not fit a time.Duration.
const maxDocumentHint = 365 * 24 * 60 * 60

// checkAuthority refuses certificates that cannot be trust anchors of td:
// a leaf, or a CA naming another trust domain (a partner serving the
// wrong bundle, or an attacker's).
func checkAuthority(td spiffeid.TrustDomain, c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return errors.New("not a CA certificate")
	}
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return fmt.Errorf("URI SAN %q is not a SPIFFE ID: %w", u.String(), err)
		}
		if !id.MemberOf(td) {
			return fmt.Errorf("SPIFFE ID %q is not in trust domain %q", id, td.Name())
		}
	}
	return nil
}

// SameContent reports whether a and b hold the same authorities and
// refresh hint, whatever their order and sequence numbers: storing b over
// a would change nothing a verifier sees.
func SameContent(a, b *typesv1.Bundle) bool {
	return proto.Equal(canonical(a), canonical(b))
}

func canonical(b *typesv1.Bundle) *typesv1.Bundle {
	c := proto.Clone(b).(*typesv1.Bundle)
	if c == nil {
		c = &typesv1.Bundle{}
	}
	c.SequenceNumber = 0
	slices.SortFunc(c.X509Authorities, func(x, y *typesv1.X509Authority) int { return bytes.Compare(x.GetAsn1(), y.GetAsn1()) })
	slices.SortFunc(c.JwtAuthorities, func(x, y *typesv1.JWTAuthority) int {
		if x.GetKeyId() != y.GetKeyId() {
			if x.GetKeyId() < y.GetKeyId() {
				return -1
			}
			return 1
		}
		return bytes.Compare(x.GetPublicKey(), y.GetPublicKey())
	})
	return c
}

// RefreshInterval is how long to wait before fetching a bundle again
// after a good fetch: its hint (DefaultRefreshHint without one), bounded
// by MinRefreshInterval and MaxRefreshInterval.
func RefreshInterval(b *typesv1.Bundle) time.Duration {
	return boundedInterval(b, MinRefreshInterval)
}

func boundedInterval(b *typesv1.Bundle, lo time.Duration) time.Duration {
	h := time.Duration(b.GetRefreshHint()) * time.Second
	if h <= 0 {
		return DefaultRefreshHint
	}
	return min(max(h, lo), MaxRefreshInterval)
}
