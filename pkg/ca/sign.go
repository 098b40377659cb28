package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
)

// X509Params describes one X.509-SVID to sign.
type X509Params struct {
	// ID is the SPIFFE ID of the SVID; it must be in the CA's trust domain
	// and have a path.
	ID spiffeid.ID
	// PublicKey is the subject's key, usually from a CSR checked with
	// svid.CheckCSR.
	PublicKey crypto.PublicKey
	// TTL is the requested lifetime, > 0; it is capped by the remaining
	// life of the active CA.
	TTL time.Duration
	// DNSNames become DNS SANs.
	DNSNames []string
	// ExtraExtensions are added as they are. Standard certificate
	// extensions (OIDs under id-ce 2.5.29 and id-pe 1.3.6.1.5.5.7.1) are
	// refused: the SVID profile fixes those.
	ExtraExtensions []pkix.Extension
	// Purpose, if set, is written into the SVID as nhid's purpose
	// attribute (see svid.PurposeExtension and docs/purpose.md).
	Purpose *svid.Purpose
}

// maxExtraExtensions bounds ExtraExtensions; nhid adds one or two.
const maxExtraExtensions = 16

var (
	oidCE = asn1.ObjectIdentifier{2, 5, 29}
	oidPE = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1}
)

// SignX509SVID signs an X.509-SVID and returns its chain: the leaf, then
// the certificates between it and the bundle's trust anchors (none for a
// self-signed CA; the CA's own certificate and any upstream intermediates
// when it chains under an upstream CA).
//
// NotBefore is backdated 10 s for clock skew; NotAfter is now+TTL, capped
// by the active CA's expiry. Signing uses only memory.
func (c *CA) SignX509SVID(ctx context.Context, p X509Params) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.checkID(p.ID); err != nil {
		return nil, err
	}
	if p.TTL <= 0 {
		return nil, fmt.Errorf("ttl: %s must be positive", p.TTL)
	}
	if err := checkExtensions(p.ExtraExtensions); err != nil {
		return nil, err
	}
	ca := c.view.Load().x509
	if ca == nil {
		return nil, errors.New("sign X.509-SVID: no active X.509 CA")
	}
	notBefore, notAfter, err := ca.validity(c.clock.Now(), p.TTL)
	if err != nil {
		return nil, err
	}
	serial, err := svid.NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl, err := svid.LeafTemplate(p.ID, p.PublicKey, serial, notBefore, notAfter, p.DNSNames)
	if err != nil {
		return nil, err
	}
	tmpl.ExtraExtensions = p.ExtraExtensions
	if p.Purpose != nil {
		ext, err := svid.PurposeExtension(*p.Purpose)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(slices.Clip(p.ExtraExtensions), ext)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, p.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign X.509-SVID for %s: %w", p.ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse X.509-SVID for %s: %w", p.ID, err)
	}
	c.metrics.x509Signed.Inc()
	chain := make([]*x509.Certificate, 0, 1+len(ca.tail))
	return append(append(chain, leaf), ca.tail...), nil
}

// validity is the lifetime of an SVID signed at now: backdated for clock
// skew, capped by the CA's own validity.
func (ca *x509Signer) validity(now time.Time, ttl time.Duration) (notBefore, notAfter time.Time, err error) {
	notAfter = now.Add(ttl)
	if notAfter.After(ca.notAfter) {
		notAfter = ca.notAfter
	}
	if !notAfter.After(now) {
		return time.Time{}, time.Time{}, fmt.Errorf("sign X.509-SVID: the active CA expired at %s", ca.notAfter.UTC().Format(time.RFC3339))
	}
	notBefore = now.Add(-backdate)
	if notBefore.Before(ca.notBefore) {
		notBefore = ca.notBefore
	}
	return notBefore, notAfter, nil
}

// checkID accepts SPIFFE IDs of this trust domain with a non-root path, of
// at most svid.MaxSPIFFEIDLen bytes: the CA is where IDs are put into
// SVIDs, and SPIFFE-ID §2.3 says not to generate longer ones.
func (c *CA) checkID(id spiffeid.ID) error {
	if !id.IsZero() && !id.MemberOf(c.td) {
		return fmt.Errorf("id: %s is not in trust domain %s", id, c.td.Name())
	}
	return svid.CheckLeafID(id)
}

func checkExtensions(exts []pkix.Extension) error {
	if len(exts) > maxExtraExtensions {
		return fmt.Errorf("extra extensions: %d given, at most %d allowed", len(exts), maxExtraExtensions)
	}
	for i, e := range exts {
		switch {
		case len(e.Id) == 0:
			return fmt.Errorf("extra extensions[%d]: empty OID", i)
		case hasPrefix(e.Id, oidCE) || hasPrefix(e.Id, oidPE):
			return fmt.Errorf("extra extensions[%d]: %s is a standard certificate extension the SVID profile sets", i, e.Id)
		case len(e.Value) == 0:
			return fmt.Errorf("extra extensions[%d] %s: empty value", i, e.Id)
		}
		for _, prev := range exts[:i] {
			if prev.Id.Equal(e.Id) {
				return fmt.Errorf("extra extensions[%d]: %s appears twice", i, e.Id)
			}
		}
	}
	return nil
}

func hasPrefix(oid, prefix asn1.ObjectIdentifier) bool {
	return len(oid) > len(prefix) && oid[:len(prefix)].Equal(prefix)
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate jti: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
