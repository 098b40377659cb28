package etcd

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// GetBundle returns the bundle of trustDomain; ErrNotFound before the first
// UpdateBundle.
func (s *Store) GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error) {
	const op = "get bundle"
	b, _, err := s.loadBundle(ctx, op, trustDomain)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("%s: bundle of %q: %w", op, trustDomain, store.ErrNotFound)
	}
	return b, nil
}

// UpdateBundle applies fn to the stored bundle (or an empty one) and stores
// it with the next sequence number and revision if nobody changed it
// meanwhile, else runs fn again on the newer bundle. Every server adds its
// own authorities this way, so none is ever lost to a concurrent update.
func (s *Store) UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error) {
	const op = "update bundle"
	if trustDomain == "" {
		return nil, fmt.Errorf("%s: trust_domain is empty: %w", op, store.ErrInvalidArgument)
	}
	if fn == nil {
		return nil, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	var out *typesv1.Bundle
	err := s.retry(ctx, op, func() (bool, error) {
		prev, kv, err := s.loadBundle(ctx, op, trustDomain)
		if err != nil {
			return false, err
		}
		var seen int64
		if prev == nil {
			prev = &typesv1.Bundle{TrustDomain: trustDomain}
		} else {
			seen = kv.ModRevision
		}
		next := proto.Clone(prev).(*typesv1.Bundle)
		if err := fn(next); err != nil {
			return false, err
		}
		if next.TrustDomain != trustDomain {
			return false, fmt.Errorf("%s: bundle of %q: update changed trust_domain to %q: %w", op, trustDomain, next.TrustDomain, store.ErrInvalidArgument)
		}
		// The sequence number is the store's, so concurrent updaters cannot
		// both publish the same number.
		next.SequenceNumber = prev.SequenceNumber + 1
		v, err := proto.Marshal(next)
		if err != nil {
			return false, fmt.Errorf("%s: encode bundle: %w", op, err)
		}
		k := s.keys.bundle(trustDomain)
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", seen)},
			[]clientv3.Op{clientv3.OpPut(k, string(v)), s.putMarker(0)}, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		out = proto.Clone(next).(*typesv1.Bundle)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListBundles returns every stored bundle, by trust domain name (etcd
// returns keys sorted).
func (s *Store) ListBundles(ctx context.Context) ([]*typesv1.Bundle, error) {
	const op = "list bundles"
	p := s.keys.bundle("")
	resp, err := s.get(ctx, op, p, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]*typesv1.Bundle, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		b := &typesv1.Bundle{}
		if err := proto.Unmarshal(kv.Value, b); err != nil {
			return nil, fmt.Errorf("%s: decode bundle of %q: %w", op, strings.TrimPrefix(string(kv.Key), p), err)
		}
		out = append(out, b)
	}
	return out, nil
}

// DeleteBundle removes a trust domain's bundle if nobody changed it since
// it was read.
func (s *Store) DeleteBundle(ctx context.Context, trustDomain string) error {
	const op = "delete bundle"
	if trustDomain == "" {
		return fmt.Errorf("%s: trust_domain is empty: %w", op, store.ErrInvalidArgument)
	}
	return s.retry(ctx, op, func() (bool, error) {
		prev, kv, err := s.loadBundle(ctx, op, trustDomain)
		if err != nil {
			return false, err
		}
		if prev == nil {
			return false, fmt.Errorf("%s: bundle of %q: %w", op, trustDomain, store.ErrNotFound)
		}
		k := s.keys.bundle(trustDomain)
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)},
			[]clientv3.Op{clientv3.OpDelete(k), s.putMarker(0)}, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		return true, nil
	})
}

// loadBundle reads a bundle and its key-value; nil, nil if absent.
func (s *Store) loadBundle(ctx context.Context, op, trustDomain string) (*typesv1.Bundle, *mvccpb.KeyValue, error) {
	resp, err := s.get(ctx, op, s.keys.bundle(trustDomain))
	if err != nil {
		return nil, nil, err
	}
	kv := first(resp.Kvs)
	if kv == nil {
		return nil, nil, nil
	}
	b := &typesv1.Bundle{}
	if err := proto.Unmarshal(kv.Value, b); err != nil {
		return nil, nil, fmt.Errorf("%s: decode bundle of %q: %w", op, trustDomain, err)
	}
	return b, kv, nil
}
