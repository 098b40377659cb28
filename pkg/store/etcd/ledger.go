package etcd

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// RecordIssued appends ledger rows in one transaction. A row whose id is
// already recorded fails the whole call with ErrAlreadyExists: the ledger
// is append-only, so a repeated serial or jti is never overwritten.
func (s *Store) RecordIssued(ctx context.Context, rows []*typesv1.IssuedSVID) error {
	const op = "record issued"
	cmps := make([]clientv3.Cmp, 0, len(rows))
	puts := make([]clientv3.Op, 0, 2*len(rows))
	gets := make([]clientv3.Op, 0, len(rows))
	seen := make(map[string]bool, len(rows))
	for i, r := range rows {
		switch {
		case r == nil:
			return fmt.Errorf("%s: rows[%d] is nil: %w", op, i, store.ErrInvalidArgument)
		case r.Id == "":
			return fmt.Errorf("%s: rows[%d].id is empty: %w", op, i, store.ErrInvalidArgument)
		case r.ExpiresAt < 0:
			return fmt.Errorf("%s: rows[%d].expires_at %d is negative: %w", op, i, r.ExpiresAt, store.ErrInvalidArgument)
		case seen[r.Id]:
			return fmt.Errorf("%s: ledger row %q: twice in one call: %w", op, r.Id, store.ErrAlreadyExists)
		}
		seen[r.Id] = true
		v, err := proto.Marshal(r)
		if err != nil {
			return fmt.Errorf("%s: encode row %q: %w", op, r.Id, err)
		}
		k := s.keys.ledger(r.Id)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		puts = append(puts, clientv3.OpPut(k, string(v)), clientv3.OpPut(s.keys.ledgerExpiry(r.ExpiresAt, r.Id), ""))
		gets = append(gets, clientv3.OpGet(k, clientv3.WithKeysOnly()))
	}
	if len(rows) == 0 {
		return s.check(ctx, op)
	}
	resp, err := s.txn(ctx, op, cmps, puts, gets)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		for _, r := range resp.Responses {
			if kv := first(r.GetResponseRange().GetKvs()); kv != nil {
				return fmt.Errorf("%s: ledger row %q: %w", op, kv.Key[len(s.keys.ledger("")):], store.ErrAlreadyExists)
			}
		}
		return fmt.Errorf("%s: a ledger row was recorded meanwhile: %w", op, store.ErrAlreadyExists)
	}
	return nil
}

// GetIssued looks a ledger row up by serial (hex) or jti.
func (s *Store) GetIssued(ctx context.Context, id string) (*typesv1.IssuedSVID, error) {
	const op = "get issued"
	resp, err := s.get(ctx, op, s.keys.ledger(id))
	if err != nil {
		return nil, err
	}
	kv := first(resp.Kvs)
	if kv == nil || id == "" {
		return nil, fmt.Errorf("%s: ledger row %q: %w", op, id, store.ErrNotFound)
	}
	out := &typesv1.IssuedSVID{}
	if err := proto.Unmarshal(kv.Value, out); err != nil {
		return nil, fmt.Errorf("%s: decode ledger row %q: %w", op, id, err)
	}
	return out, nil
}

// PruneIssued drops rows that expired before expiredBefore and returns how
// many it dropped, reading only the expiry index up to the cutoff.
func (s *Store) PruneIssued(ctx context.Context, expiredBefore time.Time) (int, error) {
	const op = "prune issued"
	cutoff := expiredBefore.Unix()
	if time.Unix(cutoff, 0).Before(expiredBefore) {
		// A row expiring within the cutoff second still expired before it.
		cutoff++
	}
	if cutoff <= 0 {
		return 0, s.check(ctx, op)
	}
	p := s.keys.under(prefixLedgerExp)
	end := p + string(binary.BigEndian.AppendUint64(nil, uint64(cutoff)))
	var doomed []*mvccpb.KeyValue
	err := s.scan(ctx, op, p, end, 0, true, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		if len(kv.Key) < len(p)+8 {
			return false, fmt.Errorf("%s: corrupt ledger expiry row %q", op, kv.Key)
		}
		doomed = append(doomed, kv)
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	// Rows are never rewritten, so each goes with its expiry row.
	n := 0
	for off := 0; off < len(doomed); off += readChunk / 2 {
		part := doomed[off:min(off+readChunk/2, len(doomed))]
		ops := make([]clientv3.Op, 0, 2*len(part))
		for _, kv := range part {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)), clientv3.OpDelete(s.keys.ledger(string(kv.Key[len(p)+8:]))))
		}
		if _, err := s.txn(ctx, op, nil, ops, nil); err != nil {
			return n, err
		}
		n += len(part)
	}
	return n, nil
}
