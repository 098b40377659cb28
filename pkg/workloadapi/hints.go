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
	seen  map[string]struct{}
	ids   []string // SPIFFE IDs of the identities left out
	hints []string // hints[i] is the hint ids[i] was left out for
}

// add reports whether an identity with hint may be sent, and records it.
func (s *hintSet) add(hint, spiffeID string) bool {
	if hint == "" {
		return true
	}
	if _, dup := s.seen[hint]; dup {
		s.ids = append(s.ids, spiffeID)
		s.hints = append(s.hints, hint)
		return false
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{})
	}
	s.seen[hint] = struct{}{}
	return true
}

// dropped lists the identities left out as SPIFFE ID, hint pairs, for a
// onceLog to tell whether they changed since the last log line.
func (s *hintSet) dropped() []string {
	out := make([]string, 0, 2*len(s.ids))
	for i, id := range s.ids {
		out = append(out, id, s.hints[i])
	}
	return out
}

// logDropped warns about the identities left out, in one line.
func (s *hintSet) logDropped(log *slog.Logger) {
	if len(s.ids) == 0 {
		return
	}
	log.Warn("identities left out of response: their hint is already taken by an earlier identity; give registration entries distinct hints",
		telemetry.Count, len(s.ids), telemetry.SPIFFEID, s.ids, telemetry.Hint, s.hints)
}
