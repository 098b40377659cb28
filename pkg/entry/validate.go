package entry

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds on entry fields. They keep a single entry small enough that the
// store's indexes, the sync stream and the SVIDs built from it stay bounded
// whatever a caller sends.
const (
	MaxIDLen       = 64
	MaxSPIFFEIDLen = 2048
	MaxSelectors   = 64
	MaxDNSNames    = 32
	MaxScopes      = 64
	MaxScopeLen    = 128
	MaxPurposeLen  = 256
	MaxOwnerLen    = 256
	MaxHintLen     = 128
	// MaxFederatesWith bounds the trust domains one entry federates with:
	// each adds a bundle to every message its workloads receive.
	MaxFederatesWith = 32
	// MaxTrustDomainLen is the SPIFFE ID spec's limit on a trust domain name.
	MaxTrustDomainLen = 255
)

// maxTTLSeconds is the largest TTL the int32 fields can carry.
const maxTTLSeconds = 1<<31 - 1

// Validate checks every field of e and reports all problems at once, each
// prefixed with the field it concerns ("entry.selectors[2]: ..."), joined
// with errors.Join. It does not modify e; call Normalize before storing.
func Validate(td spiffeid.TrustDomain, e *typesv1.Entry, lim Limits) error {
	if e == nil {
		return errors.New("entry: is required")
	}
	if td.IsZero() {
		return errors.New("entry: no trust domain to validate against")
	}
	v := &validator{td: td}
	v.id(e.GetId())
	spiffeID := v.spiffeID(e.GetSpiffeId())
	parentID := v.parentID(e.GetParentId())
	if !spiffeID.IsZero() && spiffeID == parentID {
		v.addf("entry.parent_id", "must differ from spiffe_id: an entry cannot be its own parent")
	}
	v.selectors(e.GetSelectors())
	v.ttl("entry.x509_ttl", e.GetX509Ttl(), lim.MinX509TTL, lim.MaxX509TTL)
	v.ttl("entry.jwt_ttl", e.GetJwtTtl(), lim.MinJWTTTL, lim.MaxJWTTTL)
	v.dnsNames(e.GetDnsNames())
	v.text("entry.purpose", e.GetPurpose(), MaxPurposeLen)
	v.text("entry.owner", e.GetOwner(), MaxOwnerLen)
	v.text("entry.hint", e.GetHint(), MaxHintLen)
	v.scopes(e.GetScopeCeiling())
	v.federatesWith(e.GetFederatesWith())
	v.notNegative("entry.expires_at", e.GetExpiresAt())
	v.notNegative("entry.revision", e.GetRevision())
	v.notNegative("entry.created_at", e.GetCreatedAt())
	return errors.Join(v.errs...)
}

// validator collects field errors so the caller sees every problem in one
// round trip instead of fixing them one by one.
type validator struct {
	td   spiffeid.TrustDomain
	errs []error
}

func (v *validator) addf(field, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (v *validator) id(id string) {
	if id == "" {
		return // the store assigns one
	}
	if err := CheckID(id); err != nil {
		v.addf("entry.id", "%v", err)
	}
}

// CheckID checks an entry id as given in a request: 1 to 64 letters,
// digits, '.', '_' or '-'. Callers add the field name.
func CheckID(id string) error {
	switch {
	case id == "":
		return errors.New("is required")
	case len(id) > MaxIDLen:
		return fmt.Errorf("is %d bytes, at most %d allowed", len(id), MaxIDLen)
	}
	for _, r := range id {
		if !isIDChar(r) {
			return fmt.Errorf("%s may only hold letters, digits, '.', '_' and '-'", quote(id))
		}
	}
	return nil
}

func isIDChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '-'
}

// parseInTD parses a SPIFFE ID field that must belong to v.td and have a
// path. It returns the zero ID after recording an error.
func (v *validator) parseInTD(field, s string) spiffeid.ID {
	switch {
	case s == "":
		v.addf(field, "is required")
		return spiffeid.ID{}
	case len(s) > MaxSPIFFEIDLen:
		v.addf(field, "is %d bytes, at most %d allowed", len(s), MaxSPIFFEIDLen)
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		v.addf(field, "%s is not a valid SPIFFE ID: %v", quote(s), err)
		return spiffeid.ID{}
	}
	if !id.MemberOf(v.td) {
		v.addf(field, "%s is not in trust domain %q", quote(s), v.td.Name())
		return spiffeid.ID{}
	}
	if id.Path() == "" {
		v.addf(field, "%s has no path: the trust domain's own ID cannot be used here", quote(s))
		return spiffeid.ID{}
	}
	return id
}

func (v *validator) spiffeID(s string) spiffeid.ID {
	id := v.parseInTD("entry.spiffe_id", s)
	if !id.IsZero() && agentid.IsReserved(id) {
		v.addf("entry.spiffe_id", "%s is in the /nhid namespace reserved for nhid's own identities", quote(s))
		return spiffeid.ID{}
	}
	return id
}

// parentID accepts any ID with a path in the trust domain: the server ID
// (a node-alias entry), an agent ID, or the SPIFFE ID of an alias entry.
func (v *validator) parentID(s string) spiffeid.ID {
	return v.parseInTD("entry.parent_id", s)
}

func (v *validator) selectors(sels []string) {
	switch {
	case len(sels) == 0:
		v.addf("entry.selectors", "at least one selector is required")
		return
	case len(sels) > MaxSelectors:
		v.addf("entry.selectors", "%d selectors, at most %d allowed", len(sels), MaxSelectors)
		return
	}
	for i, s := range sels {
		if _, err := selector.Parse(s); err != nil {
			v.addf(fmt.Sprintf("entry.selectors[%d]", i), "%v", err)
		}
	}
}

func (v *validator) ttl(field string, secs int32, lo, hi time.Duration) {
	d := time.Duration(secs) * time.Second
	switch {
	case secs == 0:
	case secs < 0:
		v.addf(field, "%d is negative; use 0 for the server default", secs)
	case d < lo:
		v.addf(field, "%ds is below the minimum of %v", secs, lo)
	case d > hi:
		v.addf(field, "%ds is above the maximum of %v", secs, hi)
	}
}

func (v *validator) dnsNames(names []string) {
	if len(names) > MaxDNSNames {
		v.addf("entry.dns_names", "%d names, at most %d allowed", len(names), MaxDNSNames)
		return
	}
	for i, n := range names {
		if err := checkDNSName(n); err != nil {
			v.addf(fmt.Sprintf("entry.dns_names[%d]", i), "%s %v", quote(n), err)
		}
	}
}

// text checks a free-text field that ends up in SVIDs, logs and tables,
// where a newline or control character could forge a line of output.
func (v *validator) text(field, s string, maxLen int) {
	switch {
	case len(s) > maxLen:
		v.addf(field, "is %d bytes, at most %d allowed", len(s), maxLen)
	case !utf8.ValidString(s):
		v.addf(field, "is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		v.addf(field, "must be a single line without control characters")
	}
}

func (v *validator) scopes(scopes []string) {
	if len(scopes) > MaxScopes {
		v.addf("entry.scope_ceiling", "%d scopes, at most %d allowed", len(scopes), MaxScopes)
		return
	}
	seen := make(map[string]int, len(scopes))
	for i, s := range scopes {
		field := fmt.Sprintf("entry.scope_ceiling[%d]", i)
		if err := grantreq.CheckScope(s, MaxScopeLen); err != nil {
			v.addf(field, "%v", err)
			continue
		}
		if j, dup := seen[s]; dup {
			v.addf(field, "%q repeats scope_ceiling[%d]", s, j)
			continue
		}
		seen[s] = i
	}
}

// federatesWith checks the trust domains whose bundles the entry's
// workloads receive. The server's own trust domain is refused: its bundle
// is always sent, and naming it here would suggest it could be replaced.
func (v *validator) federatesWith(names []string) {
	if len(names) > MaxFederatesWith {
		v.addf("entry.federates_with", "%d trust domains, at most %d allowed", len(names), MaxFederatesWith)
		return
	}
	seen := make(map[string]int, len(names))
	for i, n := range names {
		field := fmt.Sprintf("entry.federates_with[%d]", i)
		if err := CheckTrustDomainName(n); err != nil {
			v.addf(field, "%v", err)
			continue
		}
		if n == v.td.Name() {
			v.addf(field, "%q is the server's own trust domain, whose bundle every workload already receives", n)
			continue
		}
		if j, dup := seen[n]; dup {
			v.addf(field, "%q repeats federates_with[%d]", n, j)
			continue
		}
		seen[n] = i
	}
}

// CheckTrustDomainName checks a trust domain given by name ("partner.test"):
// not empty, at most 255 bytes, only the characters the SPIFFE ID spec
// allows. A SPIFFE ID ("spiffe://partner.test") is refused, so that what is
// stored is always the bare name clients compare against. Callers add the
// field name.
func CheckTrustDomainName(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > MaxTrustDomainLen:
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), MaxTrustDomainLen)
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return fmt.Errorf("%s is not a valid trust domain name: %v", quote(s), err)
	}
	if td.Name() != s {
		return fmt.Errorf("%s is a SPIFFE ID: give the trust domain name alone, e.g. %q", quote(s), td.Name())
	}
	return nil
}

func (v *validator) notNegative(field string, n int64) {
	if n < 0 {
		v.addf(field, "%d is negative", n)
	}
}

// checkDNSName accepts a host name of letter-digit-hyphen labels (RFC 1123),
// optionally with a wildcard "*" as the whole first label, as certificate
// SANs allow.
func checkDNSName(n string) error {
	switch {
	case n == "":
		return errors.New("is empty")
	case len(n) > 253:
		return fmt.Errorf("is %d bytes, at most 253 allowed", len(n))
	}
	labels := strings.Split(n, ".")
	if labels[0] == "*" {
		if len(labels) < 2 {
			return errors.New("is a bare wildcard")
		}
		labels = labels[1:]
	}
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return err
		}
	}
	return nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errors.New("has an empty label")
	case len(l) > 63:
		return fmt.Errorf("has a label of %d bytes, at most 63 allowed", len(l))
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("has label %q starting or ending with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("has label %q with character %q: only letters, digits and '-' are allowed", l, c)
		}
	}
	return nil
}

// quote quotes caller input for an error message, shortened so that a huge
// value cannot blow up the response.
func quote(s string) string {
	const max = 96
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}
