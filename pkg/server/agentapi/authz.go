package agentapi

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// authz answers which entries are authorised for one node, following
// docs/ARCHITECTURE.md: an entry whose parent is the node, or a node-alias
// entry whose selectors are all among the node's, and that has not expired.
type authz struct {
	td     spiffeid.TrustDomain
	nodeID string
	sels   selector.Set
	// parents holds the node's ID and the SPIFFE IDs of its matching,
	// unexpired aliases.
	parents map[string]bool
}

func newAuthz(td spiffeid.TrustDomain, node *typesv1.Node) *authz {
	sels, _ := selector.ParseSet(node.GetSelectors())
	return &authz{
		td:      td,
		nodeID:  node.GetSpiffeId(),
		sels:    sels,
		parents: map[string]bool{node.GetSpiffeId(): true},
	}
}

// aliasMatches reports whether e is a node alias that applies to the node.
func (a *authz) aliasMatches(e *typesv1.Entry) bool {
	return entry.IsAlias(a.td, e) && a.sels.Includes(entry.Selectors(e))
}

// addAliases records the matching, unexpired aliases among entries.
func (a *authz) addAliases(entries []*typesv1.Entry, now time.Time) {
	for _, e := range entries {
		if a.aliasMatches(e) && !entry.Expired(e, now) {
			a.parents[e.GetSpiffeId()] = true
		}
	}
}

// aliasParents lists the SPIFFE IDs of the matching aliases, sorted.
func (a *authz) aliasParents() []string {
	out := make([]string, 0, len(a.parents)-1)
	for p := range a.parents {
		if p != a.nodeID {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// underNode reports whether e hangs under the node or one of its aliases,
// whatever its expiry.
func (a *authz) underNode(e *typesv1.Entry) bool {
	return e != nil && a.parents[e.GetParentId()] && !entry.IsAlias(a.td, e)
}

// allows reports whether e is served to and may be minted for the node.
func (a *authz) allows(e *typesv1.Entry, now time.Time) bool {
	return a.underNode(e) && !entry.Expired(e, now)
}

// loadAuthz reads the node's aliases and returns the authorisation with
// the store revision it was read at.
func (s *Service) loadAuthz(ctx context.Context, node *typesv1.Node) (*authz, int64, error) {
	aliases, rev, err := s.store.ListEntriesByParent(ctx, []string{s.serverID})
	if err != nil {
		return nil, 0, err
	}
	az := newAuthz(s.td, node)
	az.addAliases(aliases, s.clock.Now())
	return az, rev, nil
}

// denyReason says why e may not be minted for the node, or "" if it may.
func (a *authz) denyReason(e *typesv1.Entry, now time.Time) string {
	switch {
	case entry.IsAlias(a.td, e):
		return "is a node alias; node aliases have no SVIDs"
	case !a.parents[e.GetParentId()]:
		return "is not authorised for this node"
	case entry.Expired(e, now):
		return "has expired"
	}
	return ""
}

// entryMsg phrases a per-entry refusal; ids come from the agent, so they
// are quoted and truncated.
func entryMsg(id, reason string) string {
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return fmt.Sprintf("entry %q %s", id, reason)
}
