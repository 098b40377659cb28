package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// EntryChangesSince returns the entries changed after rev (their current
// state) and the ids deleted after rev, with the revision they were read at;
// see store.EntryStore.
func (s *Store) EntryChangesSince(ctx context.Context, rev int64) ([]*typesv1.Entry, []string, int64, error) {
	if rev < 0 {
		return nil, nil, 0, fmt.Errorf("entry changes since: revision %d is negative: %w", rev, store.ErrInvalidArgument)
	}
	var changed []*typesv1.Entry
	var deleted []string
	var current int64
	err := s.view(ctx, "entry changes since", func(tx *bbolt.Tx) error {
		var err error
		if current, err = readRevision(tx); err != nil {
			return err
		}
		compacted, err := readMetaInt(tx, metaCompacted)
		if err != nil {
			return err
		}
		if rev < compacted {
			return fmt.Errorf("revision %d is before the compacted revision %d: %w", rev, compacted, store.ErrCompacted)
		}
		if changed, err = changedSince(ctx, tx, rev); err != nil {
			return err
		}
		deleted, err = deletedSince(ctx, tx, rev)
		return err
	})
	if err != nil {
		return nil, nil, 0, err
	}
	return changed, deleted, current, nil
}

// changedSince reads the live entries whose revision is above rev, in
// revision order.
func changedSince(ctx context.Context, tx *bbolt.Tx, rev int64) ([]*typesv1.Entry, error) {
	var out []*typesv1.Entry
	entries := tx.Bucket(bucketEntries)
	c := tx.Bucket(bucketByRevision).Cursor()
	for k, id := c.Seek(revKey(rev + 1)); k != nil; k, id = c.Next() {
		if len(out)%ctxCheckEvery == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e, err := loadIndexedEntry(entries, string(id))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// deletedSince reads the ids with a tombstone above rev. An id that was
// deleted and then created again is live, so it is reported as changed only;
// an id deleted twice is reported once.
func deletedSince(ctx context.Context, tx *bbolt.Tx, rev int64) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	entries := tx.Bucket(bucketEntries)
	c := tx.Bucket(bucketTombstones).Cursor()
	for k, v := c.Seek(revKey(rev + 1)); k != nil; k, v = c.Next() {
		if len(seen)%ctxCheckEvery == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		id := string(v)
		if seen[id] || entries.Get(v) != nil {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out, nil
}

// PruneTombstones drops tombstones with a revision below beforeRevision.
// Afterwards EntryChangesSince refuses revisions whose tombstones may be
// gone, so a caller never mistakes a pruned deletion for a live entry.
func (s *Store) PruneTombstones(ctx context.Context, beforeRevision int64) error {
	if beforeRevision < 0 {
		return fmt.Errorf("prune tombstones: revision %d is negative: %w", beforeRevision, store.ErrInvalidArgument)
	}
	return s.update(ctx, "prune tombstones", func(w *writeTx) error {
		c := w.bucket(bucketTombstones).Cursor()
		end := revKey(beforeRevision)
		for k, _ := c.First(); k != nil && string(k) < string(end); k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return fmt.Errorf("delete tombstone: %w", err)
			}
		}
		// Changes since rev need the tombstones above rev: all of them are
		// kept iff rev >= beforeRevision-1. Revisions not yet taken are not
		// compacted; their tombstones will be written after this prune.
		compacted := min(beforeRevision-1, w.rev)
		old, err := readMetaInt(w.tx, metaCompacted)
		if err != nil {
			return err
		}
		if compacted <= old {
			return nil
		}
		return w.bucket(bucketMeta).Put(metaCompacted, revKey(compacted))
	})
}
