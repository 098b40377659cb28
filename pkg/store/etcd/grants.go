package etcd

import (
	"context"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var _ store.GrantStore = (*Store)(nil)

// CreateGrant stores a new grant; see store.GrantStore. Its revision is the
// etcd revision of the write: grants never move the sync revision.
func (s *Store) CreateGrant(ctx context.Context, g *typesv1.Grant) (*typesv1.Grant, error) {
	const op = "create grant"
	if g == nil {
		return nil, fmt.Errorf("%s: grant is nil: %w", op, store.ErrInvalidArgument)
	}
	if err := records.CheckGrant(g); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	next := proto.Clone(g).(*typesv1.Grant)
	if next.CreatedAt == 0 {
		next.CreatedAt = s.clock.Now().Unix()
	}
	v, err := marshalRecord(next, 0, setGrantRevision)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	k := s.keys.grant(next.Id)
	ops := append([]clientv3.Op{clientv3.OpPut(k, v)}, s.grantIndexOps(nil, next)...)
	resp, err := s.txn(ctx, op, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)}, ops, nil)
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: grant %q: %w", op, next.Id, store.ErrAlreadyExists)
	}
	next.Revision = resp.Header.Revision
	return next, nil
}

// UpdateGrant applies fn to a copy of the stored grant and stores the
// result if nobody changed the grant meanwhile, else runs fn again on the
// newer copy; see store.GrantStore.
func (s *Store) UpdateGrant(ctx context.Context, id string, fn func(*typesv1.Grant) error) (*typesv1.Grant, error) {
	const op = "update grant"
	if fn == nil {
		return nil, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	var out *typesv1.Grant
	err := s.retry(ctx, op, func() (bool, error) {
		prev, kv, err := s.loadGrant(ctx, op, id)
		if err != nil {
			return false, err
		}
		next := proto.Clone(prev).(*typesv1.Grant)
		if err := fn(next); err != nil {
			return false, err
		}
		if err := checkGrantUpdate(prev, next); err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		v, err := marshalRecord(next, 0, setGrantRevision)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		ops := append([]clientv3.Op{clientv3.OpPut(string(kv.Key), v)}, s.grantIndexOps(prev, next)...)
		resp, err := s.txn(ctx, op, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)}, ops, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		// fn may keep a pointer to next: return a copy.
		out = proto.Clone(next).(*typesv1.Grant)
		out.Revision = resp.Header.Revision
		return true, nil
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

// GetGrant returns the grant with id.
func (s *Store) GetGrant(ctx context.Context, id string) (*typesv1.Grant, error) {
	g, _, err := s.loadGrant(ctx, "get grant", id)
	return g, err
}
