package bolt

import (
	"context"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var _ store.GrantStore = (*Store)(nil)

// CreateGrant stores a new grant with the next grant revision; see
// store.GrantStore.
func (s *Store) CreateGrant(ctx context.Context, g *typesv1.Grant) (*typesv1.Grant, error) {
	if g == nil {
		return nil, fmt.Errorf("create grant: grant is nil: %w", store.ErrInvalidArgument)
	}
	if err := records.CheckGrant(g); err != nil {
		return nil, fmt.Errorf("create grant: %w", err)
	}
	now := s.clock.Now().Unix()
	var out *typesv1.Grant
	err := s.update(ctx, "create grant", func(w *writeTx) error {
		if w.bucket(bucketGrants).Get([]byte(g.Id)) != nil {
			return fmt.Errorf("grant %q: %w", g.Id, store.ErrAlreadyExists)
		}
		next := proto.Clone(g).(*typesv1.Grant)
		if next.CreatedAt == 0 {
			next.CreatedAt = now
		}
		if err := w.writeGrant(next, nil); err != nil {
			return err
		}
		out = proto.Clone(next).(*typesv1.Grant)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateGrant applies fn to a copy of the stored grant and stores the
// result in the same transaction; see store.GrantStore.
func (s *Store) UpdateGrant(ctx context.Context, id string, fn func(*typesv1.Grant) error) (*typesv1.Grant, error) {
	if fn == nil {
		return nil, fmt.Errorf("update grant: fn is nil: %w", store.ErrInvalidArgument)
	}
	var out *typesv1.Grant
	err := s.update(ctx, "update grant", func(w *writeTx) error {
		prev, err := loadGrant(w.bucket(bucketGrants), id)
		if err != nil {
			return err
		}
		next := proto.Clone(prev).(*typesv1.Grant)
		if err := fn(next); err != nil {
			return err
		}
		if err := checkGrantUpdate(prev, next); err != nil {
			return err
		}
		if err := w.writeGrant(next, prev); err != nil {
			return err
		}
		out = proto.Clone(next).(*typesv1.Grant)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// checkGrantUpdate refuses changes to the fields a grant is indexed and
// identified by for life.
func checkGrantUpdate(prev, next *typesv1.Grant) error {
	field := ""
	switch {
	case next.Id != prev.Id:
		field = "id"
	case next.SpiffeId != prev.SpiffeId:
		field = "spiffe_id"
	case next.EntryId != prev.EntryId:
		field = "entry_id"
	case next.CreatedAt != prev.CreatedAt:
		field = "created_at"
	}
	if field != "" {
		return fmt.Errorf("grant %q: update may not change %s: %w", prev.Id, field, store.ErrInvalidArgument)
	}
	return records.CheckGrant(next)
}

// writeGrant gives g the next grant revision, stores it with its index
// rows and records the event; prev is the replaced version, nil on create.
func (w *writeTx) writeGrant(g, prev *typesv1.Grant) error {
	rev, err := w.nextGrantRevision()
	if err != nil {
		return err
	}
	g.Revision = rev
	if err := w.putGrant(g, prev); err != nil {
		return err
	}
	// Watchers get their own copy: fn may have kept a pointer to g.
	w.emit(store.Event{Revision: rev, Kind: store.EventGrant, Grant: proto.Clone(g).(*typesv1.Grant), PrevGrant: prev})
	return nil
}

// GetGrant returns the grant with id.
func (s *Store) GetGrant(ctx context.Context, id string) (*typesv1.Grant, error) {
	var out *typesv1.Grant
	err := s.view(ctx, "get grant", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadGrant(tx.Bucket(bucketGrants), id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// WatchGrants streams every grant change committed after it returns; see
// store.GrantStore.
func (s *Store) WatchGrants(ctx context.Context) (<-chan store.Event, error) {
	return s.watch(ctx, "watch grants", true)
}
