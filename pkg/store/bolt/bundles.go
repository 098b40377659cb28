package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// GetBundle returns the bundle of trustDomain; ErrNotFound before the first
// UpdateBundle.
func (s *Store) GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error) {
	var out *typesv1.Bundle
	err := s.view(ctx, "get bundle", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadBundle(tx.Bucket(bucketBundles), trustDomain)
		if err == nil && out == nil {
			err = fmt.Errorf("bundle of %q: %w", trustDomain, store.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateBundle applies fn to the stored bundle (or an empty one) in one
// transaction and stores it with the next sequence number and revision.
func (s *Store) UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error) {
	if trustDomain == "" {
		return nil, fmt.Errorf("update bundle: trust_domain is empty: %w", store.ErrInvalidArgument)
	}
	if fn == nil {
		return nil, fmt.Errorf("update bundle: fn is nil: %w", store.ErrInvalidArgument)
	}
	var out *typesv1.Bundle
	err := s.update(ctx, "update bundle", func(w *writeTx) error {
		b := w.bucket(bucketBundles)
		prev, err := loadBundle(b, trustDomain)
		if err != nil {
			return err
		}
		if prev == nil {
			prev = &typesv1.Bundle{TrustDomain: trustDomain}
		}
		next := proto.Clone(prev).(*typesv1.Bundle)
		if err := fn(next); err != nil {
			return err
		}
		if next.TrustDomain != trustDomain {
			return fmt.Errorf("bundle of %q: update changed trust_domain to %q: %w", trustDomain, next.TrustDomain, store.ErrInvalidArgument)
		}
		// The sequence number is the store's, so concurrent updaters cannot
		// both publish the same number.
		next.SequenceNumber = prev.SequenceNumber + 1
		v, err := marshal(next)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(trustDomain), v); err != nil {
			return fmt.Errorf("put bundle of %q: %w", trustDomain, err)
		}
		w.emit(store.Event{Revision: w.nextRevision(), Kind: store.EventBundle, Bundle: proto.Clone(next).(*typesv1.Bundle)})
		out = proto.Clone(next).(*typesv1.Bundle)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListBundles returns every stored bundle, by trust domain name (bbolt
// keeps keys sorted).
func (s *Store) ListBundles(ctx context.Context) ([]*typesv1.Bundle, error) {
	var out []*typesv1.Bundle
	err := s.view(ctx, "list bundles", func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBundles).ForEach(func(k, v []byte) error {
			b := &typesv1.Bundle{}
			if err := unmarshal(v, b); err != nil {
				return fmt.Errorf("bundle of %q: %w", k, err)
			}
			out = append(out, b)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteBundle removes a trust domain's bundle.
func (s *Store) DeleteBundle(ctx context.Context, trustDomain string) error {
	if trustDomain == "" {
		return fmt.Errorf("delete bundle: trust_domain is empty: %w", store.ErrInvalidArgument)
	}
	return s.update(ctx, "delete bundle", func(w *writeTx) error {
		b := w.bucket(bucketBundles)
		prev, err := loadBundle(b, trustDomain)
		if err != nil {
			return err
		}
		if prev == nil {
			return fmt.Errorf("bundle of %q: %w", trustDomain, store.ErrNotFound)
		}
		if err := b.Delete([]byte(trustDomain)); err != nil {
			return fmt.Errorf("delete bundle of %q: %w", trustDomain, err)
		}
		w.emit(store.Event{Revision: w.nextRevision(), Kind: store.EventBundle, PrevBundle: prev})
		return nil
	})
}

// loadBundle reads a bundle, returning nil if absent.
func loadBundle(b *bbolt.Bucket, trustDomain string) (*typesv1.Bundle, error) {
	v := b.Get([]byte(trustDomain))
	if v == nil {
		return nil, nil
	}
	out := &typesv1.Bundle{}
	if err := unmarshal(v, out); err != nil {
		return nil, fmt.Errorf("bundle of %q: %w", trustDomain, err)
	}
	return out, nil
}
