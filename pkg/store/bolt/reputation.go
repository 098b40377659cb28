package bolt

import (
	"context"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/internal/records"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var (
	_ store.ReputationStore       = (*Store)(nil)
	_ store.ReputationScoreReader = (*Store)(nil)
)

// reputationEvents is the field GetReputationScore leaves out.
var reputationEvents = (&typesv1.Reputation{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()

// UpdateReputation applies fn to a copy of the stored record of spiffeID
// (a new record holding only SpiffeId when none is stored) and stores the
// result in the same transaction; see store.ReputationStore. Scores do not
// move the global revision: agents never sync them.
func (s *Store) UpdateReputation(ctx context.Context, spiffeID string, fn func(*typesv1.Reputation) error) (*typesv1.Reputation, error) {
	const op = "update reputation"
	if fn == nil {
		return nil, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	if spiffeID == "" {
		return nil, fmt.Errorf("%s: spiffe_id is empty: %w", op, store.ErrInvalidArgument)
	}
	var out *typesv1.Reputation
	err := s.update(ctx, op, func(w *writeTx) error {
		b := w.bucket(bucketReputation)
		next, err := loadReputation(b, spiffeID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			next = &typesv1.Reputation{SpiffeId: spiffeID}
		case err != nil:
			return err
		}
		if err := fn(next); err != nil {
			return err
		}
		if next.SpiffeId != spiffeID {
			return fmt.Errorf("reputation %q: update changed spiffe_id to %q: %w", spiffeID, next.SpiffeId, store.ErrInvalidArgument)
		}
		v, err := marshal(next)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(spiffeID), v); err != nil {
			return fmt.Errorf("put reputation %q: %w", spiffeID, err)
		}
		// fn may keep a pointer to next: return a copy.
		out = proto.Clone(next).(*typesv1.Reputation)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetReputation returns the record of spiffeID; ErrNotFound if none.
func (s *Store) GetReputation(ctx context.Context, spiffeID string) (*typesv1.Reputation, error) {
	var out *typesv1.Reputation
	err := s.view(ctx, "get reputation", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadReputation(tx.Bucket(bucketReputation), spiffeID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetReputationScore returns the record of spiffeID without its events;
// ErrNotFound if none.
func (s *Store) GetReputationScore(ctx context.Context, spiffeID string) (*typesv1.Reputation, error) {
	out := &typesv1.Reputation{}
	err := s.view(ctx, "get reputation score", func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketReputation).Get([]byte(spiffeID))
		if v == nil || spiffeID == "" {
			return fmt.Errorf("reputation %q: %w", spiffeID, store.ErrNotFound)
		}
		// UnmarshalWithout copies what it keeps: v is only valid in tx.
		if err := records.UnmarshalWithout(v, out, reputationEvents); err != nil {
			return fmt.Errorf("reputation %q: %w", spiffeID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListReputations pages through records ordered by SPIFFE ID; pageSize 0
// means all.
func (s *Store) ListReputations(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Reputation, string, error) {
	return listByKey(ctx, s, "list reputations", bucketReputation, pageSize, pageToken, (*typesv1.Reputation).GetSpiffeId)
}

// loadReputation reads a record, or fails with an error wrapping
// ErrNotFound.
func loadReputation(b *bbolt.Bucket, spiffeID string) (*typesv1.Reputation, error) {
	if spiffeID == "" {
		return nil, fmt.Errorf("reputation %q: %w", spiffeID, store.ErrNotFound)
	}
	v := b.Get([]byte(spiffeID))
	if v == nil {
		return nil, fmt.Errorf("reputation %q: %w", spiffeID, store.ErrNotFound)
	}
	r := &typesv1.Reputation{}
	if err := unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("reputation %q: %w", spiffeID, err)
	}
	return r, nil
}
