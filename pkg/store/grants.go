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

// GrantUsage is a subject's usage counters: the policy input
// usage.last_minute, last_hour, last_day and active.
type GrantUsage struct {
	LastMinute, LastHour, LastDay, Active int
}

// GrantStore persists grants, keyed by grant id (the Txn-Token's txn claim).
//
// Grants do not move the global revision agents sync by: they are never
// synced, and they change far more often than entries. Every grant write
// instead takes the next value of a grant revision of its own, stored in
// the grant's Revision and in the event WatchGrants delivers.
type GrantStore interface {
	// CreateGrant stores a new grant; its id and spiffe_id must be set
	// (ErrInvalidArgument otherwise) and its id unused (ErrAlreadyExists).
	// A created_at of 0 becomes the store clock's now.
	CreateGrant(ctx context.Context, g *typesv1.Grant) (*typesv1.Grant, error)
	// UpdateGrant applies fn to the stored grant in one transaction (fn may
	// run more than once on backends that retry); an error from fn aborts
	// and is returned. ErrNotFound if absent. fn may not change the id,
	// spiffe_id, entry_id or created_at (ErrInvalidArgument).
	UpdateGrant(ctx context.Context, id string, fn func(*typesv1.Grant) error) (*typesv1.Grant, error)
	GetGrant(ctx context.Context, id string) (*typesv1.Grant, error)
	// ListGrants pages through grants, newest first: by created_at, then by
	// id, both descending.
	ListGrants(ctx context.Context, req ListGrantsRequest) (grants []*typesv1.Grant, nextPageToken string, err error)
	// GrantUsage reads all of spiffeID's usage counters in one consistent
	// read: the grants created at or after now minus a minute, an hour and
	// a day (in whole seconds, whatever their status), and the ACTIVE
	// grants that have not expired at now (expires_at after it), from the
	// indexes alone.
	GrantUsage(ctx context.Context, spiffeID string, now time.Time) (GrantUsage, error)
	// PruneGrants drops grants that ended or expired before the given time:
	// ended_at if set, else expires_at; a grant with neither is kept.
	PruneGrants(ctx context.Context, endedBefore time.Time) (int, error)
	// WatchGrants delivers, in grant-revision order, an EventGrant for every
	// grant created or updated after it returns (pruning is not an event).
	// The channel closes when ctx ends or the watcher falls too far
	// behind, as with Watcher.Watch; events are shared, do not modify them.
	WatchGrants(ctx context.Context) (<-chan Event, error)
}
