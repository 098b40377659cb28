package etcd

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// loadRecord reads the record of kind ("entry", "node", ...) named id,
// stored at key, with its key-value (whose mod revision read-modify-write
// transactions compare on); ErrNotFound when id is empty or nothing is
// stored there.
func loadRecord[T any](ctx context.Context, s *Store, op, kind, id, key string, decode func(*mvccpb.KeyValue) (T, error)) (T, *mvccpb.KeyValue, error) {
	var zero T
	if id == "" {
		return zero, nil, fmt.Errorf("%s: %s %q: %w", op, kind, id, store.ErrNotFound)
	}
	resp, err := s.get(ctx, op, key)
	if err != nil {
		return zero, nil, err
	}
	kv := first(resp.Kvs)
	if kv == nil {
		return zero, nil, fmt.Errorf("%s: %s %q: %w", op, kind, id, store.ErrNotFound)
	}
	v, err := decode(kv)
	if err != nil {
		return zero, nil, fmt.Errorf("%s: %w", op, err)
	}
	return v, kv, nil
}

// loadEntry reads entry id and its key-value.
func (s *Store) loadEntry(ctx context.Context, op, id string) (*typesv1.Entry, *mvccpb.KeyValue, error) {
	return loadRecord(ctx, s, op, "entry", id, s.keys.entry(id), decodeEntry)
}

// loadNode reads a node and its key-value, or fails with ErrNotFound.
func (s *Store) loadNode(ctx context.Context, op, spiffeID string) (*typesv1.Node, *mvccpb.KeyValue, error) {
	return loadRecord(ctx, s, op, "node", spiffeID, s.keys.node(spiffeID), decodeNode)
}

// loadToken reads a token and its key-value, or fails with ErrNotFound.
func (s *Store) loadToken(ctx context.Context, op, id string) (*typesv1.JoinToken, *mvccpb.KeyValue, error) {
	return loadRecord(ctx, s, op, "join token", id, s.keys.token(id), decodeToken)
}

// loadGrant reads a grant and its key-value, or fails with ErrNotFound.
func (s *Store) loadGrant(ctx context.Context, op, id string) (*typesv1.Grant, *mvccpb.KeyValue, error) {
	return loadRecord(ctx, s, op, "grant", id, s.keys.grant(id), decodeGrant)
}

// loadReputation reads a record and its key-value, or fails with
// ErrNotFound.
func (s *Store) loadReputation(ctx context.Context, op, spiffeID string) (*typesv1.Reputation, *mvccpb.KeyValue, error) {
	return loadRecord(ctx, s, op, "reputation", spiffeID, s.keys.reputation(spiffeID), decodeReputation)
}

func decodeToken(kv *mvccpb.KeyValue) (*typesv1.JoinToken, error) {
	t := &typesv1.JoinToken{}
	if err := proto.Unmarshal(kv.Value, t); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return t, nil
}
