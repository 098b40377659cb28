package etcd

import (
	"context"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func setNodeRevision(n *typesv1.Node, rev int64) { n.Revision = rev }

func decodeNode(kv *mvccpb.KeyValue) (*typesv1.Node, error) {
	return decodeRecord(kv, &typesv1.Node{}, setNodeRevision)
}

// CreateNode stores a new node with the next revision; ErrAlreadyExists if
// its SPIFFE ID is taken.
func (s *Store) CreateNode(ctx context.Context, n *typesv1.Node) (*typesv1.Node, error) {
	const op = "create node"
	if n == nil {
		return nil, fmt.Errorf("%s: node is nil: %w", op, store.ErrInvalidArgument)
	}
	if n.SpiffeId == "" {
		return nil, fmt.Errorf("%s: spiffe_id is empty: %w", op, store.ErrInvalidArgument)
	}
	node := proto.Clone(n).(*typesv1.Node)
	v, err := marshalRecord(node, 0, setNodeRevision)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	k := s.keys.node(node.SpiffeId)
	resp, err := s.txn(ctx, op,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(k, v), s.putMarker(0)}, nil)
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: node %q: %w", op, node.SpiffeId, store.ErrAlreadyExists)
	}
	node.Revision = syncRevision(resp.Header.Revision, 0)
	return node, nil
}

// UpdateNode applies fn to a copy of the stored node and stores the result
// if nobody changed the node meanwhile, else runs fn again on the newer
// copy; see store.NodeStore.
func (s *Store) UpdateNode(ctx context.Context, spiffeID string, fn func(*typesv1.Node) error) (*typesv1.Node, error) {
	const op = "update node"
	if fn == nil {
		return nil, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	var out *typesv1.Node
	err := s.retry(ctx, op, func() (bool, error) {
		prev, kv, err := s.loadNode(ctx, op, spiffeID)
		if err != nil {
			return false, err
		}
		next := proto.Clone(prev).(*typesv1.Node)
		if err := fn(next); err != nil {
			return false, err
		}
		if next.SpiffeId != spiffeID {
			return false, fmt.Errorf("%s: node %q: update changed spiffe_id to %q: %w", op, spiffeID, next.SpiffeId, store.ErrInvalidArgument)
		}
		v, err := marshalRecord(next, 0, setNodeRevision)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)},
			[]clientv3.Op{clientv3.OpPut(string(kv.Key), v), s.putMarker(0)}, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		// The caller's fn may keep a pointer to next: return a copy.
		out = proto.Clone(next).(*typesv1.Node)
		out.Revision = syncRevision(resp.Header.Revision, 0)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetNode returns the node with spiffeID.
func (s *Store) GetNode(ctx context.Context, spiffeID string) (*typesv1.Node, error) {
	n, _, err := s.loadNode(ctx, "get node", spiffeID)
	return n, err
}

// ListNodes pages through nodes ordered by SPIFFE ID; pageSize 0 means all.
func (s *Store) ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*typesv1.Node, string, error) {
	const op = "list nodes"
	if pageSize < 0 {
		return nil, "", fmt.Errorf("%s: page_size %d is negative: %w", op, pageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(pageToken)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	p := s.keys.under(prefixNodes)
	start := p
	if after != "" {
		start = p + afterKey(after)
	}
	var out []*typesv1.Node
	var next string
	err = s.scan(ctx, op, start, prefixEnd(p), 0, false, pageHint(pageSize), func(kv *mvccpb.KeyValue) (bool, error) {
		if pageSize > 0 && len(out) == pageSize {
			next = records.EncodePageToken(out[len(out)-1].SpiffeId)
			return false, nil
		}
		n, err := decodeNode(kv)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		out = append(out, n)
		return true, nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// DeleteNode removes a node; ErrNotFound if absent.
func (s *Store) DeleteNode(ctx context.Context, spiffeID string) error {
	const op = "delete node"
	k := s.keys.node(spiffeID)
	resp, err := s.txn(ctx, op,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), ">", 0)},
		[]clientv3.Op{clientv3.OpDelete(k), s.putMarker(0)}, nil)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: node %q: %w", op, spiffeID, store.ErrNotFound)
	}
	return nil
}

// CountNodes returns the number of nodes.
func (s *Store) CountNodes(ctx context.Context) (int, error) {
	p := s.keys.under(prefixNodes)
	resp, err := s.get(ctx, "count nodes", p, clientv3.WithRange(prefixEnd(p)), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}
