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

// CreateNode stores a new node with the next revision; ErrAlreadyExists if
// its SPIFFE ID is taken.
func (s *Store) CreateNode(ctx context.Context, n *typesv1.Node) (*typesv1.Node, error) {
	if n == nil {
		return nil, fmt.Errorf("create node: node is nil: %w", store.ErrInvalidArgument)
	}
	if n.SpiffeId == "" {
		return nil, fmt.Errorf("create node: spiffe_id is empty: %w", store.ErrInvalidArgument)
	}
	var out *typesv1.Node
	err := s.update(ctx, "create node", func(w *writeTx) error {
		if w.bucket(bucketNodes).Get([]byte(n.SpiffeId)) != nil {
			return fmt.Errorf("node %q: %w", n.SpiffeId, store.ErrAlreadyExists)
		}
		node := proto.Clone(n).(*typesv1.Node)
		if err := w.putNode(node, nil); err != nil {
			return err
		}
		out = proto.Clone(node).(*typesv1.Node)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateNode applies fn to a copy of the stored node and stores the result
// in the same transaction; see store.NodeStore.
func (s *Store) UpdateNode(ctx context.Context, spiffeID string, fn func(*typesv1.Node) error) (*typesv1.Node, error) {
	if fn == nil {
		return nil, fmt.Errorf("update node: fn is nil: %w", store.ErrInvalidArgument)
	}
	var out *typesv1.Node
	err := s.update(ctx, "update node", func(w *writeTx) error {
		prev, err := w.getNode(spiffeID)
		if err != nil {
			return err
		}
		next := proto.Clone(prev).(*typesv1.Node)
		if err := fn(next); err != nil {
			return err
		}
		if next.SpiffeId != spiffeID {
			return fmt.Errorf("node %q: update changed spiffe_id to %q: %w", spiffeID, next.SpiffeId, store.ErrInvalidArgument)
		}
		if err := w.putNode(next, prev); err != nil {
			return err
		}
		out = proto.Clone(next).(*typesv1.Node)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// putNode stores n with the next revision and records the event; prev is
// the replaced node, nil on create.
func (w *writeTx) putNode(n, prev *typesv1.Node) error {
	n.Revision = w.nextRevision()
	v, err := marshal(n)
	if err != nil {
		return err
	}
	if err := w.bucket(bucketNodes).Put([]byte(n.SpiffeId), v); err != nil {
		return fmt.Errorf("put node %q: %w", n.SpiffeId, err)
	}
	// Watchers get their own copy: fn may have kept a pointer to n.
	w.emit(store.Event{Revision: n.Revision, Kind: store.EventNode, Node: proto.Clone(n).(*typesv1.Node), PrevNode: prev})
	return nil
}

func (w *writeTx) getNode(spiffeID string) (*typesv1.Node, error) {
	return loadNode(w.bucket(bucketNodes), spiffeID)
}

// loadNode reads a node, or fails with an error wrapping ErrNotFound.
func loadNode(b *bbolt.Bucket, spiffeID string) (*typesv1.Node, error) {
	v := b.Get([]byte(spiffeID))
	if v == nil {
		return nil, fmt.Errorf("node %q: %w", spiffeID, store.ErrNotFound)
	}
	n := &typesv1.Node{}
	if err := unmarshal(v, n); err != nil {
		return nil, fmt.Errorf("node %q: %w", spiffeID, err)
	}
	return n, nil
}

// GetNode returns the node with spiffeID.
func (s *Store) GetNode(ctx context.Context, spiffeID string) (*typesv1.Node, error) {
	var out *typesv1.Node
	err := s.view(ctx, "get node", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadNode(tx.Bucket(bucketNodes), spiffeID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListNodes pages through nodes ordered by SPIFFE ID; pageSize 0 means all.
func (s *Store) ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Node, string, error) {
	return listByKey(ctx, s, "list nodes", bucketNodes, pageSize, pageToken, (*typesv1.Node).GetSpiffeId)
}

// listByKey pages through the records of a bucket keyed by a string id
// (nodes, reputation scores) in key order; pageSize 0 means all. The page
// token is the last id returned.
func listByKey[T interface {
	*M
	proto.Message
}, M any](ctx context.Context, s *Store, op string, bucket []byte, pageSize int, pageToken string, idOf func(T) string) ([]T, string, error) {
	if pageSize < 0 {
		return nil, "", fmt.Errorf("%s: page_size %d is negative: %w", op, pageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(pageToken)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	var out []T
	var next string
	err = s.view(ctx, op, func(tx *bbolt.Tx) error {
		start := []byte{}
		if after != "" {
			start = afterKey(after)
		}
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if len(out)%ctxCheckEvery == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if pageSize > 0 && len(out) == pageSize {
				next = records.EncodePageToken(idOf(out[len(out)-1]))
				return nil
			}
			r := T(new(M))
			if err := unmarshal(v, r); err != nil {
				return fmt.Errorf("%s %q: %w", bucket, k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// DeleteNode removes a node, bumping the revision.
func (s *Store) DeleteNode(ctx context.Context, spiffeID string) error {
	return s.update(ctx, "delete node", func(w *writeTx) error {
		prev, err := w.getNode(spiffeID)
		if err != nil {
			return err
		}
		if err := w.bucket(bucketNodes).Delete([]byte(spiffeID)); err != nil {
			return fmt.Errorf("delete node %q: %w", spiffeID, err)
		}
		w.emit(store.Event{Revision: w.nextRevision(), Kind: store.EventNode, PrevNode: prev})
		return nil
	})
}

// CountNodes returns the number of nodes.
func (s *Store) CountNodes(ctx context.Context) (int, error) {
	var n int
	err := s.view(ctx, "count nodes", func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketNodes).Stats().KeyN
		return nil
	})
	return n, err
}
