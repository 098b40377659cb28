package store

import (
	"context"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ListGrantsRequest filters and pages ListGrants. Empty filters match all.
type ListGrantsRequest struct {
	SpiffeID string
	// EntryIDs: only grants issued for one of these entries.
	EntryIDs []string
	// Status: only grants in this status (UNSPECIFIED matches all).
	Status typesv1.GrantStatus
	// PageSize 0 means no limit.
	PageSize  int
	PageToken string
}

// GrantStore persists grants, keyed by grant id (the Txn-Token's txn claim).
type GrantStore interface {
	// CreateGrant stores a new grant; its id must be set (ErrInvalidArgument
	// otherwise) and unused (ErrAlreadyExists).
	CreateGrant(ctx context.Context, g *typesv1.Grant) (*typesv1.Grant, error)
	// UpdateGrant applies fn to the stored grant in one transaction (fn may
	// run more than once on backends that retry); an error from fn aborts
	// and is returned. ErrNotFound if absent.
	UpdateGrant(ctx context.Context, id string, fn func(*typesv1.Grant) error) (*typesv1.Grant, error)
	GetGrant(ctx context.Context, id string) (*typesv1.Grant, error)
	// ListGrants pages through grants, newest first.
	ListGrants(ctx context.Context, req ListGrantsRequest) (grants []*typesv1.Grant, nextPageToken string, err error)
	// CountGrants counts the grants created for spiffeID at or after since,
	// whatever their status: the usage counters policy sees.
	CountGrants(ctx context.Context, spiffeID string, since time.Time) (int, error)
	// PruneGrants drops grants that ended or expired before the given time.
	PruneGrants(ctx context.Context, endedBefore time.Time) (int, error)
}
