package notify

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of routing configuration.
const (
	// MaxRoutes bounds the routes of a Router: each has its own queue,
	// workers and connections.
	MaxRoutes = 100
	// MaxRouteOwners bounds the owner patterns of one route.
	MaxRouteOwners = 1000
	// MaxOwnerPatternLen bounds one owner pattern, in bytes (an entry's
	// owner is at most 256 bytes).
	MaxOwnerPatternLen = 256
	// DefaultRouteLabel is the route label of the default webhook's
	// metrics and log lines when a Router runs it.
	DefaultRouteLabel = "default"
)

// Types returns the notification types, the Type* constants.
func Types() []string {
	return []string{TypeApprovalRequested, TypeReputationAlert, TypeReputationRestricted}
}

// CheckType returns an error unless typ is one of Types().
func CheckType(typ string) error {
	if !slices.Contains(Types(), typ) {
		return fmt.Errorf("unknown notification type %q; types are %s", typ, strings.Join(Types(), ", "))
	}
	return nil
}

// routeNameRE keeps route names fit for a metric label and a log value.
var routeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// DefaultRouteName is the name of the i-th route (from 0) when it has
// none: "route-<i>", i its index in the configured list.
func DefaultRouteName(i int) string { return fmt.Sprintf("route-%d", i) }

// CheckRouteName returns an error unless name is 1 to 63 lower-case
// letters, digits, '-' or '_', starting with a letter or digit, and not
// DefaultRouteLabel. Names label metrics, so they are short and few.
func CheckRouteName(name string) error {
	switch {
	case name == DefaultRouteLabel:
		return fmt.Errorf("%q is reserved for the default webhook", name)
	case !routeNameRE.MatchString(name):
		return fmt.Errorf("%q is not 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit", name)
	}
	return nil
}

// OwnerPattern matches notification owners. A pattern is an owner
// (exact match) or a glob in which each '*' stands for any run of
// characters, none included ('@' and '.' too: "*@example.org" matches
// "ana@example.org" but not "ana@eu.example.org"). No other character
// is special. Matching ignores case, over the whole owner: owners are
// typed by people, and "Ana@Example.org" is the same person as
// "ana@example.org".
type OwnerPattern struct {
	raw   string
	lower string
}

// ParseOwnerPattern checks a pattern: not empty, at most
// MaxOwnerPatternLen bytes, valid UTF-8, without control characters or
// surrounding spaces (which no owner has, so they are mistakes).
func ParseOwnerPattern(s string) (OwnerPattern, error) {
	switch {
	case s == "":
		return OwnerPattern{}, errors.New("empty owner pattern: use \"*\" to match every owner")
	case len(s) > MaxOwnerPatternLen:
		return OwnerPattern{}, fmt.Errorf("owner pattern is %d bytes, at most %d allowed", len(s), MaxOwnerPatternLen)
	case !utf8.ValidString(s):
		return OwnerPattern{}, errors.New("owner pattern is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return OwnerPattern{}, fmt.Errorf("owner pattern %q holds a control character", s)
	case strings.TrimSpace(s) != s:
		return OwnerPattern{}, fmt.Errorf("owner pattern %q has leading or trailing spaces", s)
	}
	return OwnerPattern{raw: s, lower: strings.ToLower(s)}, nil
}

// String returns the pattern as written.
func (p OwnerPattern) String() string { return p.raw }

// Match reports whether owner matches p.
func (p OwnerPattern) Match(owner string) bool {
	return glob(p.lower, strings.ToLower(owner))
}

// glob matches s against pattern, where '*' matches any run of bytes.
// Byte-wise matching equals rune-wise matching here: a literal in the
// pattern starts on a rune boundary, so it cannot match mid-rune. The
// loop backtracks only to the last '*', so it takes O(len(p)·len(s)) at
// worst and never recurses.
func glob(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			// Let the last '*' take one more byte and retry after it.
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
