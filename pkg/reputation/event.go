package reputation

import "context"

// Kind is what happened to move a score. Weights are configurable per kind
// (Config.Weights); DefaultWeights gives the defaults.
type Kind string

// Event kinds.
const (
	// KindGrantReleased: a grant completed and was released cleanly (+).
	KindGrantReleased Kind = "grant_released"
	// KindGrantDenied: policy denied a grant request (−).
	KindGrantDenied Kind = "grant_denied"
	// KindApprovalRejected: a person rejected an approval request (−−).
	KindApprovalRejected Kind = "approval_rejected"
	// KindMisuseReported: a relying party reported misuse or out-of-scope
	// use (−−−).
	KindMisuseReported Kind = "misuse_reported"
	// KindRateLimited: a request was denied by a rate-limit rule (−).
	KindRateLimited Kind = "rate_limited"
	// KindAttestationFailed: an attestation failed for that identity (−).
	KindAttestationFailed Kind = "attestation_failed"
	// KindReset: an operator reset the score to the baseline.
	KindReset Kind = "reset"
)

// Event is one observation about a subject.
type Event struct {
	// SPIFFEID is the subject. Required.
	SPIFFEID string
	// Owner is the subject's accountable human, when known; alerts go to
	// them.
	Owner string
	Kind  Kind
	// Reason says what happened, for people.
	Reason string
	// Reporter is who observed it: "server", a relying party's SPIFFE ID,
	// or an operator.
	Reporter string
	// GrantID links the event to a grant, if any.
	GrantID string
}

// Standing is a subject's score now and what it entails.
type Standing struct {
	// Score is 0–1000, decayed to now and rounded.
	Score int
	// Restricted: the score is below the restrict threshold, so every
	// grant needs approval.
	Restricted bool
}

// Tracker is what the grant service and the APIs use; *Service implements
// it.
type Tracker interface {
	// Standing returns the subject's score now; the baseline for a
	// subject never seen.
	Standing(ctx context.Context, spiffeID string) (Standing, error)
	// Observe applies an event and returns the new standing.
	Observe(ctx context.Context, ev Event) (Standing, error)
}
