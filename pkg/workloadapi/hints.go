package workloadapi

import (
	"log/slog"

	"github.com/nhid/nhid/pkg/telemetry"
)

// hintSet enforces the Workload API rule that a non-empty hint is unique
// within a response. The first identity with a hint keeps it; later ones
// are left out, as clients would pick the first anyway, and leaving them
// out keeps a client from ever choosing between two identities by the
// same name.
type hintSet struct {
	seen    map[string]struct{}
	dropped []string // "spiffe_id (hint)" of every identity left out
}

// add reports whether an identity with hint may be sent, and records it.
func (s *hintSet) add(hint, spiffeID string) bool {
	if hint == "" {
		return true
	}
	if _, dup := s.seen[hint]; dup {
		s.dropped = append(s.dropped, spiffeID+" (hint "+hint+")")
		return false
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{})
	}
	s.seen[hint] = struct{}{}
	return true
}

// logDropped warns about the identities left out, in one line.
func (s *hintSet) logDropped(log *slog.Logger) {
	if len(s.dropped) == 0 {
		return
	}
	log.Warn("identities left out of response: their hint is already taken by an earlier identity; give registration entries distinct hints",
		telemetry.Count, len(s.dropped), telemetry.SPIFFEID, s.dropped)
}
