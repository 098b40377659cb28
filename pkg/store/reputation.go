package store

import (
	"context"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ReputationStore persists reputation scores, keyed by SPIFFE ID (see
// pkg/reputation, which owns the scoring rules). Scores are server-side
// state: writing one does not move the global revision and Watch never
// delivers it.
type ReputationStore interface {
	// UpdateReputation applies fn in one transaction to the stored record
	// of spiffeID, or to a new record holding only SpiffeId when there is
	// none; fn may run more than once on backends that retry, and an error
	// from fn aborts and is returned. fn may not change SpiffeId
	// (ErrInvalidArgument). Returns the stored copy.
	UpdateReputation(ctx context.Context, spiffeID string, fn func(*typesv1.Reputation) error) (*typesv1.Reputation, error)
	// GetReputation returns the record; ErrNotFound if none is stored.
	GetReputation(ctx context.Context, spiffeID string) (*typesv1.Reputation, error)
	// ListReputations pages through records ordered by SPIFFE ID;
	// PageSize 0 = all.
	ListReputations(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Reputation, string, error)
}

// ReputationScoreReader is what a backend may offer besides
// ReputationStore: a record without its events, which is all a grant
// decision needs, without the cost of decoding them.
type ReputationScoreReader interface {
	// GetReputationScore returns the record of spiffeID with Events left
	// out; ErrNotFound if none is stored.
	GetReputationScore(ctx context.Context, spiffeID string) (*typesv1.Reputation, error)
}
