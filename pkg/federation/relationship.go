package federation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Relationship is a configured federation relationship: where a partner
// trust domain publishes its bundle and how its endpoint authenticates.
type Relationship struct {
	// TrustDomain is the partner's; never the server's own.
	TrustDomain spiffeid.TrustDomain
	// URL is the bundle endpoint, https only.
	URL string
	// Profile is how the endpoint authenticates.
	Profile Profile
	// EndpointID is the SPIFFE ID the endpoint presents (ProfileSPIFFE;
	// required there, and in TrustDomain).
	EndpointID spiffeid.ID
	// BootstrapBundle is a file holding the partner's SPIFFE bundle
	// document, obtained out of band: stored as its first bundle when
	// none is, which with ProfileSPIFFE is what authenticates the first
	// fetch. Optional.
	BootstrapBundle string
	// CAFile is a PEM file of roots trusted for the endpoint's
	// certificate besides the system's (ProfileWeb only): a private PKI.
	CAFile string
}

// Check validates r for a server of trust domain own, returning every
// problem, each naming its field.
func (r Relationship) Check(own spiffeid.TrustDomain) []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case r.TrustDomain.IsZero():
		fail("TrustDomain", "required")
	case r.TrustDomain == own:
		fail("TrustDomain", "%q is the server's own trust domain", own.Name())
	}
	if err := CheckURL(r.URL); err != nil {
		fail("URL", "%v", err)
	}
	switch r.Profile {
	case ProfileSPIFFE:
		switch {
		case r.EndpointID.IsZero():
			fail("EndpointID", "required with profile %s", ProfileSPIFFE)
		case !r.TrustDomain.IsZero() && !r.EndpointID.MemberOf(r.TrustDomain):
			fail("EndpointID", "%q is not in trust domain %q", r.EndpointID, r.TrustDomain.Name())
		}
		if r.CAFile != "" {
			fail("CAFile", "only used with profile %s", ProfileWeb)
		}
	case ProfileWeb:
		if !r.EndpointID.IsZero() {
			fail("EndpointID", "only used with profile %s", ProfileSPIFFE)
		}
	default:
		fail("Profile", "%q is not %s or %s", r.Profile, ProfileSPIFFE, ProfileWeb)
	}
	return errs
}

// CheckRelationships checks every relationship (Check) and that no two
// share a trust domain; errors name "Relationships[i].Field".
func CheckRelationships(own spiffeid.TrustDomain, rels []Relationship) []error {
	var errs []error
	seen := make(map[spiffeid.TrustDomain]int, len(rels))
	for i, rel := range rels {
		if j, dup := seen[rel.TrustDomain]; dup && !rel.TrustDomain.IsZero() {
			errs = append(errs, fmt.Errorf("Relationships[%d].TrustDomain: %q already has Relationships[%d]", i, rel.TrustDomain.Name(), j))
		} else {
			seen[rel.TrustDomain] = i
		}
		for _, e := range rel.Check(own) {
			errs = append(errs, fmt.Errorf("Relationships[%d].%w", i, e))
		}
	}
	return errs
}

// CheckURL checks s is an absolute https URL with a host and no user
// info (a bundle endpoint needs no credentials, and logs must not carry
// them).
func CheckURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return errors.New("required")
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return fmt.Errorf("scheme %q is not https: bundles are only fetched over HTTPS", u.Scheme)
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("may not hold user info")
	case u.Fragment != "":
		return errors.New("may not hold a fragment")
	}
	return nil
}

// LoadBundleFile reads a SPIFFE bundle document of td from path and
// checks it as Parse does.
func LoadBundleFile(td spiffeid.TrustDomain, path string) (*typesv1.Bundle, error) {
	doc, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	b, err := Parse(td, doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// LoadCAFile reads a PEM file of CA certificates, for ProfileWeb's extra
// roots.
func LoadCAFile(path string) ([]*x509.Certificate, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	certs, err := svid.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// readLimited reads at most MaxDocumentSize bytes of path, refusing a
// larger file.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxDocumentSize)
	}
	return data, nil
}
