// Package grantreq owns what makes a grant request well formed: the limits,
// the RFC 9396 authorization_details shape and the scope-token syntax. It
// depends only on the standard library and the grant proto, so the agent
// can refuse bad requests before they leave the node without linking any
// server code; the server checks again with its own configured limits.
package grantreq

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// ErrInvalidRequest marks a grant request that breaks a rule below; the
// message names every offending field. Nothing is stored for it.
var ErrInvalidRequest = errors.New("invalid grant request")

// Hard bounds. A server may configure tighter limits, never looser ones,
// so a request that passes ValidateRequest on the agent is judged by the
// server's own limits and nothing else.
const (
	// MaxMaxTTL is the longest grant any server may be configured to give.
	MaxMaxTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest grant a server gives by default.
	DefaultMaxTTL = time.Hour
	// maxSPIFFEIDBytes is the SPIFFE ID length every implementation supports.
	maxSPIFFEIDBytes = 2048
)

// Limits bounds the size of a grant request.
type Limits struct {
	// MaxScopes is the most scopes one request may ask for (default 32).
	MaxScopes int
	// MaxScopeBytes bounds each scope token (default 128).
	MaxScopeBytes int
	// MaxResourceBytes and MaxActionBytes bound resource and action
	// (default 256 each).
	MaxResourceBytes int
	MaxActionBytes   int
	// MaxReasonBytes bounds the reason (default 1024).
	MaxReasonBytes int
	// MaxDetailsBytes bounds authorization_details (default 16 KiB).
	MaxDetailsBytes int
}

// DefaultLimits are the limits a server applies unless configured
// otherwise; they are also the loosest limits allowed.
func DefaultLimits() Limits {
	return Limits{
		MaxScopes:        32,
		MaxScopeBytes:    128,
		MaxResourceBytes: 256,
		MaxActionBytes:   256,
		MaxReasonBytes:   1024,
		MaxDetailsBytes:  16 << 10,
	}
}

// Check reports limits that are not positive or looser than the defaults.
func (l Limits) Check() error {
	def := DefaultLimits()
	var errs []error
	for _, f := range []struct {
		name     string
		val, max int
	}{
		{"MaxScopes", l.MaxScopes, def.MaxScopes},
		{"MaxScopeBytes", l.MaxScopeBytes, def.MaxScopeBytes},
		{"MaxResourceBytes", l.MaxResourceBytes, def.MaxResourceBytes},
		{"MaxActionBytes", l.MaxActionBytes, def.MaxActionBytes},
		{"MaxReasonBytes", l.MaxReasonBytes, def.MaxReasonBytes},
		{"MaxDetailsBytes", l.MaxDetailsBytes, def.MaxDetailsBytes},
	} {
		if f.val < 1 || f.val > f.max {
			errs = append(errs, fmt.Errorf("limits: %s: %d is not between 1 and %d", f.name, f.val, f.max))
		}
	}
	return errors.Join(errs...)
}

// ValidateRequest checks a grant request against DefaultLimits and a TTL
// of at most MaxMaxTTL: what an agent can check without knowing the
// server's configuration. The server checks again with its own limits.
// The error wraps ErrInvalidRequest and names every offending field.
func ValidateRequest(req *grantv1.GrantRequest) error {
	_, err := DefaultLimits().Validate(req, MaxMaxTTL)
	return err
}

// Validate checks req against l and maxTTL and returns its decoded
// authorization_details; the error wraps ErrInvalidRequest.
func (l Limits) Validate(req *grantv1.GrantRequest, maxTTL time.Duration) ([]any, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: request: required", ErrInvalidRequest)
	}
	v := &problems{}
	l.checkScopes(v, req.GetScopes())
	v.text("resource", req.GetResource(), 0, l.MaxResourceBytes)
	v.text("action", req.GetAction(), 0, l.MaxActionBytes)
	v.text("reason", req.GetReason(), 1, l.MaxReasonBytes)
	maxSeconds := int64(maxTTL / time.Second)
	switch ttl := int64(req.GetTtl()); {
	case ttl <= 0:
		v.addf("ttl", "%d s: a grant needs a TTL above 0 s", ttl)
	case ttl > maxSeconds:
		v.addf("ttl", "%d s exceeds the maximum of %d s", ttl, maxSeconds)
	}
	if id := req.GetSpiffeId(); len(id) > maxSPIFFEIDBytes {
		v.addf("spiffe_id", "is %d bytes, at most %d allowed", len(id), maxSPIFFEIDBytes)
	}
	details, err := parseDetails(req.GetAuthorizationDetails(), l.MaxDetailsBytes)
	if err != nil {
		v.list = append(v.list, err.Error())
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return details, nil
}

// problems collects what is wrong with a request, field by field.
type problems struct{ list []string }

func (p *problems) addf(field, format string, args ...any) {
	p.list = append(p.list, field+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidRequest, strings.Join(p.list, "; "))
}

func (l Limits) checkScopes(p *problems, scopes []string) {
	switch n := len(scopes); {
	case n == 0:
		p.addf("scopes", "at least one scope is required")
		return
	case n > l.MaxScopes:
		p.addf("scopes", "%d scopes, at most %d allowed", n, l.MaxScopes)
		return
	}
	seen := make(map[string]int, len(scopes))
	for i, s := range scopes {
		field := fmt.Sprintf("scopes[%d]", i)
		if err := CheckScope(s, l.MaxScopeBytes); err != nil {
			p.addf(field, "%v", err)
			continue
		}
		if j, dup := seen[s]; dup {
			p.addf(field, "%q repeats scopes[%d]", s, j)
			continue
		}
		seen[s] = i
	}
}

// CheckScope checks one scope token of at most maxBytes, as RFC 6749
// section 3.3 defines it: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ),
// printable ASCII without space, '"' or '\'. Entries' scope ceilings and
// grant requests use it alike.
func CheckScope(s string, maxBytes int) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxBytes:
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), maxBytes)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == 0x22 || c == 0x5C || c > 0x7E {
			return fmt.Errorf("holds %q at byte %d: a scope is printable ASCII without space, '\"' or '\\' (RFC 6749 section 3.3)", c, i)
		}
	}
	return nil
}

// text checks a free-text field: UTF-8, one line without control
// characters, between minBytes and maxBytes long.
func (p *problems) text(field, s string, minBytes, maxBytes int) {
	switch {
	case len(s) < minBytes:
		p.addf(field, "required")
	case len(s) > maxBytes:
		p.addf(field, "is %d bytes, at most %d allowed", len(s), maxBytes)
	case !utf8.ValidString(s):
		p.addf(field, "is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.addf(field, "must be printable text without control characters")
	}
}

// CheckText checks one free-text field (length, UTF-8, no control
// characters); the error wraps ErrInvalidRequest and names the field.
func CheckText(field, s string, minBytes, maxBytes int) error {
	p := &problems{}
	p.text(field, s, minBytes, maxBytes)
	return p.err()
}
