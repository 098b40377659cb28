package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// RecordIssued appends ledger rows in one transaction. A row whose id is
// already recorded fails the whole call with ErrAlreadyExists: the ledger
// is append-only, so a repeated serial or jti is never overwritten.
func (s *Store) RecordIssued(ctx context.Context, rows []*typesv1.IssuedSVID) error {
	for i, r := range rows {
		switch {
		case r == nil:
			return fmt.Errorf("record issued: rows[%d] is nil: %w", i, store.ErrInvalidArgument)
		case r.Id == "":
			return fmt.Errorf("record issued: rows[%d].id is empty: %w", i, store.ErrInvalidArgument)
		case r.ExpiresAt < 0:
			return fmt.Errorf("record issued: rows[%d].expires_at %d is negative: %w", i, r.ExpiresAt, store.ErrInvalidArgument)
		}
	}
	return s.update(ctx, "record issued", func(w *writeTx) error {
		ledger, byExp := w.bucket(bucketLedger), w.bucket(bucketLedgerByExp)
		for _, r := range rows {
			if ledger.Get([]byte(r.Id)) != nil {
				return fmt.Errorf("ledger row %q: %w", r.Id, store.ErrAlreadyExists)
			}
			v, err := marshal(r)
			if err != nil {
				return err
			}
			if err := ledger.Put([]byte(r.Id), v); err != nil {
				return fmt.Errorf("put ledger row %q: %w", r.Id, err)
			}
			if err := byExp.Put(expiryKey(r.ExpiresAt, r.Id), []byte{}); err != nil {
				return fmt.Errorf("put ledger expiry of %q: %w", r.Id, err)
			}
		}
		return nil
	})
}

// expiryKey orders ledger rows by expiry so that pruning reads only what it
// drops.
func expiryKey(expiresAt int64, id string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(expiresAt)), id...)
}

// GetIssued looks a ledger row up by serial (hex) or jti.
func (s *Store) GetIssued(ctx context.Context, id string) (*typesv1.IssuedSVID, error) {
	var out *typesv1.IssuedSVID
	err := s.view(ctx, "get issued", func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketLedger).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("ledger row %q: %w", id, store.ErrNotFound)
		}
		out = &typesv1.IssuedSVID{}
		return unmarshal(v, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PruneIssued drops rows that expired before expiredBefore and returns how
// many it dropped.
func (s *Store) PruneIssued(ctx context.Context, expiredBefore time.Time) (int, error) {
	cutoff := expiredBefore.Unix()
	if time.Unix(cutoff, 0).Before(expiredBefore) {
		// A row expiring within the cutoff second still expired before it.
		cutoff++
	}
	if cutoff <= 0 {
		return 0, nil
	}
	var n int
	err := s.update(ctx, "prune issued", func(w *writeTx) error {
		n = 0 // a write may run again (see update)
		rows := w.bucket(bucketLedger)
		end := binary.BigEndian.AppendUint64(nil, uint64(cutoff))
		c := w.bucket(bucketLedgerByExp).Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k, end) < 0; k, _ = c.First() {
			if len(k) < 8 {
				return errors.New("corrupt ledger expiry row")
			}
			if err := rows.Delete(bytes.Clone(k[8:])); err != nil {
				return fmt.Errorf("delete ledger row %q: %w", k[8:], err)
			}
			if err := c.Delete(); err != nil {
				return fmt.Errorf("delete ledger expiry row: %w", err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
