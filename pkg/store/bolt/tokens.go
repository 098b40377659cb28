package bolt

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// CreateJoinToken stores a join token; ErrAlreadyExists if its id is taken.
// Join tokens do not take a revision: agents never sync them.
func (s *Store) CreateJoinToken(ctx context.Context, t *typesv1.JoinToken) error {
	if err := checkJoinToken(t); err != nil {
		return fmt.Errorf("create join token: %w", err)
	}
	return s.update(ctx, "create join token", func(w *writeTx) error {
		b := w.bucket(bucketTokens)
		if b.Get([]byte(t.Id)) != nil {
			return fmt.Errorf("join token %q: %w", t.Id, store.ErrAlreadyExists)
		}
		return putToken(b, t)
	})
}

// checkJoinToken refuses tokens that could never be used safely: without a
// secret hash anyone could use them, without an expiry they never expire.
func checkJoinToken(t *typesv1.JoinToken) error {
	switch {
	case t == nil:
		return fmt.Errorf("join token is nil: %w", store.ErrInvalidArgument)
	case t.Id == "":
		return fmt.Errorf("id is empty: %w", store.ErrInvalidArgument)
	case len(t.SecretHash) == 0:
		return fmt.Errorf("join token %q: secret_hash is empty: %w", t.Id, store.ErrInvalidArgument)
	case t.ExpiresAt <= 0:
		return fmt.Errorf("join token %q: expires_at %d is not a positive unix time: %w", t.Id, t.ExpiresAt, store.ErrInvalidArgument)
	}
	return nil
}

func putToken(b *bbolt.Bucket, t *typesv1.JoinToken) error {
	v, err := marshal(t)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(t.Id), v); err != nil {
		return fmt.Errorf("put join token %q: %w", t.Id, err)
	}
	return nil
}

// UseJoinToken checks and marks a token used in one transaction; see
// store.TokenStore. The secret hash is compared in constant time.
func (s *Store) UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error) {
	// used_at 0 means unused, so a use must be stamped with a real time or
	// the token could be used again.
	if now.Unix() <= 0 {
		return nil, fmt.Errorf("use join token %q: now %v is not a valid time: %w", id, now, store.ErrInvalidArgument)
	}
	if usedBy == "" {
		return nil, fmt.Errorf("use join token %q: used_by is empty: %w", id, store.ErrInvalidArgument)
	}
	var out *typesv1.JoinToken
	err := s.update(ctx, "use join token", func(w *writeTx) error {
		b := w.bucket(bucketTokens)
		t, err := loadToken(b, id)
		if err != nil {
			return err
		}
		switch {
		case len(secretHash) == 0 || subtle.ConstantTimeCompare(t.SecretHash, secretHash) != 1:
			return fmt.Errorf("join token %q: %w", id, store.ErrTokenInvalid)
		case t.UsedAt != 0:
			return fmt.Errorf("join token %q: used at %s: %w", id, time.Unix(t.UsedAt, 0).UTC().Format(time.RFC3339), store.ErrTokenUsed)
		case now.After(time.Unix(t.ExpiresAt, 0)):
			return fmt.Errorf("join token %q: expired at %s: %w", id, time.Unix(t.ExpiresAt, 0).UTC().Format(time.RFC3339), store.ErrTokenExpired)
		}
		t.UsedAt = now.Unix()
		t.UsedBy = usedBy
		if err := putToken(b, t); err != nil {
			return err
		}
		out = proto.Clone(t).(*typesv1.JoinToken)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetJoinToken returns the token with id; ErrNotFound if absent. The
// token is decoded afresh, so the caller owns it.
func (s *Store) GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error) {
	var out *typesv1.JoinToken
	err := s.view(ctx, "get join token", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadToken(tx.Bucket(bucketTokens), id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// loadToken reads a token, or fails with an error wrapping ErrNotFound.
func loadToken(b *bbolt.Bucket, id string) (*typesv1.JoinToken, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	}
	t := &typesv1.JoinToken{}
	if err := unmarshal(v, t); err != nil {
		return nil, fmt.Errorf("join token %q: %w", id, err)
	}
	return t, nil
}

// ListJoinTokens returns every join token, ordered by id.
func (s *Store) ListJoinTokens(ctx context.Context) ([]*typesv1.JoinToken, error) {
	var out []*typesv1.JoinToken
	err := s.view(ctx, "list join tokens", func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			t := &typesv1.JoinToken{}
			if err := unmarshal(v, t); err != nil {
				return fmt.Errorf("join token %q: %w", k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteJoinToken revokes a token; ErrNotFound if absent.
func (s *Store) DeleteJoinToken(ctx context.Context, id string) error {
	return s.update(ctx, "delete join token", func(w *writeTx) error {
		b := w.bucket(bucketTokens)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete join token %q: %w", id, err)
		}
		return nil
	})
}

// PruneJoinTokens drops tokens whose expiry is before expiredBefore, used
// or not, and returns how many it dropped.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error) {
	var n int
	err := s.update(ctx, "prune join tokens", func(w *writeTx) error {
		var expired [][]byte
		err := w.bucket(bucketTokens).ForEach(func(k, v []byte) error {
			t := &typesv1.JoinToken{}
			if err := unmarshal(v, t); err != nil {
				return fmt.Errorf("join token %q: %w", k, err)
			}
			if time.Unix(t.ExpiresAt, 0).Before(expiredBefore) {
				expired = append(expired, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Deleting while ForEach iterates would skip rows, and the keys are
		// cloned because bbolt's own slices do not outlive page changes.
		for _, k := range expired {
			if err := w.bucket(bucketTokens).Delete(k); err != nil {
				return fmt.Errorf("delete join token %q: %w", k, err)
			}
		}
		n = len(expired)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
