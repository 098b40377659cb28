// Package entry owns the rules for registration entries: what a valid entry
// is (Validate), the canonical form it is stored in (Normalize), and the few
// questions the rest of nhid asks about one (its selector set, whether it is
// a node alias, whether it has expired). The admin API, the agent API and
// the grants code all use these rules, so an entry means the same thing
// wherever it is read.
package entry

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Limits bounds the SVID lifetimes an entry may ask for. A TTL of 0 in an
// entry always means "the server default" and is never checked against them.
type Limits struct {
	MinX509TTL time.Duration
	MaxX509TTL time.Duration
	MinJWTTTL  time.Duration
	MaxJWTTTL  time.Duration
}

// DefaultLimits allows X.509-SVIDs of 60 s to 30 days and JWT-SVIDs of 30 s
// to 24 h: below the minimums rotation would churn, above the maximums a
// leaked SVID stays useful for too long.
func DefaultLimits() Limits {
	return Limits{
		MinX509TTL: 60 * time.Second,
		MaxX509TTL: 30 * 24 * time.Hour,
		MinJWTTTL:  30 * time.Second,
		MaxJWTTTL:  24 * time.Hour,
	}
}

// Check reports limits that no TTL could satisfy, so a misconfigured server
// fails at start instead of refusing every entry.
func (l Limits) Check() error {
	var errs []error
	check := func(name string, lo, hi time.Duration) {
		switch {
		case lo < time.Second:
			errs = append(errs, fmt.Errorf("limits: minimum %s TTL %v is below 1s", name, lo))
		case hi < lo:
			errs = append(errs, fmt.Errorf("limits: maximum %s TTL %v is below the minimum %v", name, hi, lo))
		case hi > maxTTLSeconds*time.Second:
			errs = append(errs, fmt.Errorf("limits: maximum %s TTL %v does not fit in int32 seconds", name, hi))
		}
	}
	check("x509", l.MinX509TTL, l.MaxX509TTL)
	check("jwt", l.MinJWTTTL, l.MaxJWTTTL)
	return errors.Join(errs...)
}

// Normalize puts e in the canonical form entries are stored in: selectors,
// scope_ceiling, dns_names and federates_with sorted with duplicates
// removed, and DNS names
// lower-cased (they compare case-insensitively). The store's duplicate rule
// compares selector sets, so this must run before every write.
func Normalize(e *typesv1.Entry) {
	if e == nil {
		return
	}
	e.Selectors = sortedUnique(e.Selectors)
	e.ScopeCeiling = sortedUnique(e.ScopeCeiling)
	for i, n := range e.DnsNames {
		e.DnsNames[i] = strings.ToLower(n)
	}
	e.DnsNames = sortedUnique(e.DnsNames)
	e.FederatesWith = sortedUnique(e.FederatesWith)
}

// sortedUnique sorts s in place and drops repeats, keeping nil as nil so
// that normalising does not turn an absent field into an empty one.
func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return s
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// Selectors returns the entry's selector set. It assumes e was validated:
// a selector that does not parse is left out rather than reported, which
// can only make the entry match fewer workloads, never more.
func Selectors(e *typesv1.Entry) selector.Set {
	if e == nil {
		return selector.NewSet()
	}
	sels := make([]selector.Selector, 0, len(e.Selectors))
	for _, s := range e.Selectors {
		if sel, err := selector.Parse(s); err == nil {
			sels = append(sels, sel)
		}
	}
	return selector.NewSet(sels...)
}

// IsAlias reports whether e is a node-alias entry: its parent is the server,
// so its selectors describe nodes and its SPIFFE ID can be the parent of
// workload entries served to every matching node.
func IsAlias(td spiffeid.TrustDomain, e *typesv1.Entry) bool {
	return e != nil && e.GetParentId() == agentid.Server(td).String()
}

// Expired reports whether e is past its expires_at at now. An entry with
// expires_at 0 never expires; one whose expiry equals now has expired.
func Expired(e *typesv1.Entry, now time.Time) bool {
	exp := e.GetExpiresAt()
	return exp != 0 && now.Unix() >= exp
}
