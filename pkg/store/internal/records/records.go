// Package records holds what both store backends need to agree on beyond
// the store interface: the opaque page-token format and the checks on
// records a backend's indexes cannot hold. Keeping them in one place keeps
// the backends' answers identical, which the conformance suite expects.
package records

import (
	"encoding/base64"
	"fmt"
	"slices"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// MaxGrantIDLen bounds a grant id, which is part of index keys.
const MaxGrantIDLen = 256

// EncodePageToken hides the last key of a page from callers, who must
// treat it as opaque.
func EncodePageToken(lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastKey))
}

// DecodePageToken returns the key after which the next page starts ("" for
// the first page); a malformed token wraps store.ErrInvalidArgument.
func DecodePageToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", fmt.Errorf("page_token is malformed: %w: %w", err, store.ErrInvalidArgument)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("page_token is malformed: empty key: %w", store.ErrInvalidArgument)
	}
	return string(b), nil
}

// UniqueStrings returns ss sorted without repeats, leaving ss as it is.
func UniqueStrings(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckGrant refuses grants the indexes cannot hold.
func CheckGrant(g *typesv1.Grant) error {
	switch {
	case g.Id == "":
		return fmt.Errorf("id is empty: %w", store.ErrInvalidArgument)
	case len(g.Id) > MaxGrantIDLen:
		return fmt.Errorf("id is %d bytes, at most %d allowed: %w", len(g.Id), MaxGrantIDLen, store.ErrInvalidArgument)
	case g.SpiffeId == "":
		return fmt.Errorf("grant %q: spiffe_id is empty: %w", g.Id, store.ErrInvalidArgument)
	}
	for _, t := range []struct {
		name string
		v    int64
	}{{"created_at", g.CreatedAt}, {"decided_at", g.DecidedAt}, {"expires_at", g.ExpiresAt}, {"ended_at", g.EndedAt}} {
		if t.v < 0 {
			return fmt.Errorf("grant %q: %s %d is negative: %w", g.Id, t.name, t.v, store.ErrInvalidArgument)
		}
	}
	return nil
}
