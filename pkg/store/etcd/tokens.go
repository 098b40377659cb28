package etcd

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// CreateJoinToken stores a join token; ErrAlreadyExists if its id is taken.
// Join tokens do not move the sync revision: agents never sync them.
func (s *Store) CreateJoinToken(ctx context.Context, t *typesv1.JoinToken) error {
	const op = "create join token"
	if err := checkJoinToken(t); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := proto.Marshal(t)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	k := s.keys.token(t.Id)
	resp, err := s.txn(ctx, op,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(k, string(v))}, nil)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: join token %q: %w", op, t.Id, store.ErrAlreadyExists)
	}
	return nil
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

// UseJoinToken checks and marks a token used; see store.TokenStore. The
// mark is a compare-and-swap on the token's mod revision, so of any number
// of servers racing with the same token exactly one succeeds; the others
// read it again and find it used. The secret hash is compared in constant
// time.
func (s *Store) UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error) {
	const op = "use join token"
	// used_at 0 means unused, so a use must be stamped with a real time or
	// the token could be used again.
	if now.Unix() <= 0 {
		return nil, fmt.Errorf("%s %q: now %v is not a valid time: %w", op, id, now, store.ErrInvalidArgument)
	}
	if usedBy == "" {
		return nil, fmt.Errorf("%s %q: used_by is empty: %w", op, id, store.ErrInvalidArgument)
	}
	var out *typesv1.JoinToken
	err := s.retry(ctx, op, func() (bool, error) {
		t, kv, err := s.loadToken(ctx, op, id)
		if err != nil {
			return false, err
		}
		switch {
		case len(secretHash) == 0 || subtle.ConstantTimeCompare(t.SecretHash, secretHash) != 1:
			return false, fmt.Errorf("%s: join token %q: %w", op, id, store.ErrTokenInvalid)
		case t.UsedAt != 0:
			return false, fmt.Errorf("%s: join token %q: used at %s: %w", op, id, time.Unix(t.UsedAt, 0).UTC().Format(time.RFC3339), store.ErrTokenUsed)
		case now.After(time.Unix(t.ExpiresAt, 0)):
			return false, fmt.Errorf("%s: join token %q: expired at %s: %w", op, id, time.Unix(t.ExpiresAt, 0).UTC().Format(time.RFC3339), store.ErrTokenExpired)
		}
		t.UsedAt, t.UsedBy = now.Unix(), usedBy
		v, err := proto.Marshal(t)
		if err != nil {
			return false, fmt.Errorf("%s: encode: %w", op, err)
		}
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)},
			[]clientv3.Op{clientv3.OpPut(string(kv.Key), string(v))}, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		out = t
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetJoinToken returns the token with id; ErrNotFound if absent.
func (s *Store) GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error) {
	t, _, err := s.loadToken(ctx, "get join token", id)
	return t, err
}

// ListJoinTokens returns every join token, ordered by id.
func (s *Store) ListJoinTokens(ctx context.Context) ([]*typesv1.JoinToken, error) {
	var out []*typesv1.JoinToken
	err := s.eachToken(ctx, "list join tokens", func(t *typesv1.JoinToken, _ *mvccpb.KeyValue) {
		out = append(out, t)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachToken calls fn with every token, read at one revision.
func (s *Store) eachToken(ctx context.Context, op string, fn func(*typesv1.JoinToken, *mvccpb.KeyValue)) error {
	p := s.keys.under(prefixTokens)
	return s.scan(ctx, op, p, prefixEnd(p), 0, false, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		t := &typesv1.JoinToken{}
		if err := proto.Unmarshal(kv.Value, t); err != nil {
			return false, fmt.Errorf("%s: decode join token %q: %w", op, kv.Key, err)
		}
		fn(t, kv)
		return true, nil
	})
}

// DeleteJoinToken revokes a token; ErrNotFound if absent.
func (s *Store) DeleteJoinToken(ctx context.Context, id string) error {
	const op = "delete join token"
	resp, err := s.txn(ctx, op, nil, []clientv3.Op{clientv3.OpDelete(s.keys.token(id))}, nil)
	if err != nil {
		return err
	}
	if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
		return fmt.Errorf("%s: join token %q: %w", op, id, store.ErrNotFound)
	}
	return nil
}

// PruneJoinTokens drops tokens whose expiry is before expiredBefore, used
// or not, and returns how many it dropped. A token used while the prune
// runs is kept until the next one.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error) {
	const op = "prune join tokens"
	var expired []*mvccpb.KeyValue
	err := s.eachToken(ctx, op, func(t *typesv1.JoinToken, kv *mvccpb.KeyValue) {
		if time.Unix(t.ExpiresAt, 0).Before(expiredBefore) {
			expired = append(expired, kv)
		}
	})
	if err != nil {
		return 0, err
	}
	return s.deleteUnchanged(ctx, op, expired)
}
