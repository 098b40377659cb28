package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/internal/records"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// prefixReputation holds one Reputation per SPIFFE ID:
//
//	rep/<spiffe id>        Reputation
//
// It lies outside r/ on purpose: scores are not synced to agents, so the
// store's one watch never sees them, and they never move the sync revision.
const prefixReputation = "rep/"

var (
	_ store.ReputationStore       = (*Store)(nil)
	_ store.ReputationScoreReader = (*Store)(nil)
)

// reputationEvents is the field GetReputationScore leaves out.
var reputationEvents = (&typesv1.Reputation{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()

func (k keys) reputation(spiffeID string) string { return k.prefix + prefixReputation + spiffeID }

// UpdateReputation applies fn to a copy of the stored record of spiffeID
// (a new record holding only SpiffeId when none is stored) and stores the
// result if nobody changed it meanwhile, else runs fn again on the newer
// copy; see store.ReputationStore.
func (s *Store) UpdateReputation(ctx context.Context, spiffeID string, fn func(*typesv1.Reputation) error) (*typesv1.Reputation, error) {
	const op = "update reputation"
	if fn == nil {
		return nil, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	if spiffeID == "" {
		return nil, fmt.Errorf("%s: spiffe_id is empty: %w", op, store.ErrInvalidArgument)
	}
	k := s.keys.reputation(spiffeID)
	var out *typesv1.Reputation
	err := s.retry(ctx, op, func() (bool, error) {
		next, kv, err := s.loadReputation(ctx, op, spiffeID)
		// The comparison is on the key's mod revision; 0 means "absent",
		// so that two servers creating the first record do not both win.
		var modRev int64
		switch {
		case errors.Is(err, store.ErrNotFound):
			next = &typesv1.Reputation{SpiffeId: spiffeID}
		case err != nil:
			return false, err
		default:
			modRev = kv.ModRevision
		}
		if err := fn(next); err != nil {
			return false, err
		}
		if next.SpiffeId != spiffeID {
			return false, fmt.Errorf("%s: reputation %q: update changed spiffe_id to %q: %w", op, spiffeID, next.SpiffeId, store.ErrInvalidArgument)
		}
		v, err := proto.Marshal(next)
		if err != nil {
			return false, fmt.Errorf("%s: encode reputation %q: %w", op, spiffeID, err)
		}
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", modRev)},
			[]clientv3.Op{clientv3.OpPut(k, string(v))}, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		// fn may keep a pointer to next: return a copy.
		out = proto.Clone(next).(*typesv1.Reputation)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetReputation returns the record of spiffeID; ErrNotFound if none.
func (s *Store) GetReputation(ctx context.Context, spiffeID string) (*typesv1.Reputation, error) {
	r, _, err := s.loadReputation(ctx, "get reputation", spiffeID)
	return r, err
}

// GetReputationScore returns the record of spiffeID without its events;
// ErrNotFound if none.
func (s *Store) GetReputationScore(ctx context.Context, spiffeID string) (*typesv1.Reputation, error) {
	const op = "get reputation score"
	if spiffeID == "" {
		return nil, fmt.Errorf("%s: reputation %q: %w", op, spiffeID, store.ErrNotFound)
	}
	resp, err := s.get(ctx, op, s.keys.reputation(spiffeID))
	if err != nil {
		return nil, err
	}
	kv := first(resp.Kvs)
	if kv == nil {
		return nil, fmt.Errorf("%s: reputation %q: %w", op, spiffeID, store.ErrNotFound)
	}
	out := &typesv1.Reputation{}
	if err := records.UnmarshalWithout(kv.Value, out, reputationEvents); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", op, kv.Key, err)
	}
	return out, nil
}

func decodeReputation(kv *mvccpb.KeyValue) (*typesv1.Reputation, error) {
	r := &typesv1.Reputation{}
	if err := proto.Unmarshal(kv.Value, r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return r, nil
}

// ListReputations pages through records ordered by SPIFFE ID; pageSize 0
// means all.
func (s *Store) ListReputations(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Reputation, string, error) {
	const op = "list reputations"
	if pageSize < 0 {
		return nil, "", fmt.Errorf("%s: page_size %d is negative: %w", op, pageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(pageToken)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	p := s.keys.under(prefixReputation)
	start := p
	if after != "" {
		start = p + afterKey(after)
	}
	var out []*typesv1.Reputation
	var next string
	err = s.scan(ctx, op, start, prefixEnd(p), 0, false, pageHint(pageSize), func(kv *mvccpb.KeyValue) (bool, error) {
		if pageSize > 0 && len(out) == pageSize {
			next = records.EncodePageToken(out[len(out)-1].SpiffeId)
			return false, nil
		}
		r, err := decodeReputation(kv)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		out = append(out, r)
		return true, nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}
