package reputation

import (
	"math"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Decay is score after elapsed time, moved toward baseline exponentially:
// baseline + (score − baseline) · 2^(−elapsed/halfLife). A negative
// elapsed (clocks of servers sharing a store disagree) counts as none.
func Decay(score, baseline float64, elapsed, halfLife time.Duration) float64 {
	if elapsed <= 0 || halfLife <= 0 {
		return score
	}
	return baseline + (score-baseline)*math.Exp2(-float64(elapsed)/float64(halfLife))
}

// clamp keeps a score within MinScore–MaxScore.
func clamp(s float64) float64 {
	return math.Max(MinScore, math.Min(MaxScore, s))
}

// isNew reports whether r is the empty record the store hands fn for a
// subject it has never stored.
func isNew(r *typesv1.Reputation) bool {
	return r.GetUpdatedAt() == 0 && len(r.GetEvents()) == 0
}

// current is r's score decayed to now; the baseline for a new record.
func (s *Service) current(r *typesv1.Reputation, now time.Time) float64 {
	if isNew(r) {
		return s.cfg.Baseline
	}
	return clamp(Decay(r.GetScore(), s.cfg.Baseline, now.Sub(time.Unix(0, r.GetUpdatedAt())), s.cfg.HalfLife))
}

// standing is what a score entails.
func (s *Service) standing(score float64) Standing {
	return Standing{Score: int(math.Round(score)), Restricted: score < s.cfg.RestrictBelow}
}
