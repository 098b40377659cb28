package etcd

import (
	"context"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// EntryChangesSince returns the entries changed after rev (their current
// state) and the ids deleted after rev, with the revision they were read
// at; see store.EntryStore. etcd answers "which keys changed after this
// revision" from its in-memory index, so only the changed entries' values
// travel.
func (s *Store) EntryChangesSince(ctx context.Context, rev int64) ([]*typesv1.Entry, []string, int64, error) {
	const op = "entry changes since"
	if rev < 0 {
		return nil, nil, 0, fmt.Errorf("%s: revision %d is negative: %w", op, rev, store.ErrInvalidArgument)
	}
	var changed []*typesv1.Entry
	var deleted []string
	var at int64
	err := s.readAt(ctx, op, func(etcdRev, syncRev int64) error {
		at = syncRev
		compacted, err := s.readCompacted(ctx, op, etcdRev)
		if err != nil {
			return err
		}
		if rev < compacted {
			return fmt.Errorf("%s: revision %d is before the compacted revision %d: %w", op, rev, compacted, store.ErrCompacted)
		}
		if changed, err = s.changedSince(ctx, op, rev, etcdRev); err != nil {
			return err
		}
		deleted, err = s.deletedSince(ctx, op, rev, etcdRev, changed)
		return err
	})
	if err != nil {
		return nil, nil, 0, err
	}
	return changed, deleted, at, nil
}

// readCompacted reads the revision up to which tombstones were pruned.
func (s *Store) readCompacted(ctx context.Context, op string, etcdRev int64) (int64, error) {
	resp, err := s.getAt(ctx, op, s.keys.compacted(), etcdRev)
	if err != nil {
		return 0, err
	}
	kv := first(resp.Kvs)
	if kv == nil {
		return 0, nil
	}
	return parseInt(keyCompacted, kv.Value)
}

// changedSince reads the live entries whose sync revision is above rev.
func (s *Store) changedSince(ctx context.Context, op string, rev, etcdRev int64) ([]*typesv1.Entry, error) {
	p := s.keys.under(prefixEntries)
	modRev, _ := splitRevision(rev)
	if modRev == 0 {
		var out []*typesv1.Entry
		err := s.scan(ctx, op, p, prefixEnd(p), etcdRev, false, 0, func(kv *mvccpb.KeyValue) (bool, error) {
			e, err := decodeEntry(kv)
			out = append(out, e)
			return err == nil, err
		})
		return out, err
	}
	// The entries of the transaction at modRev are changed after rev only
	// if their sub is above rev's, so that transaction is read too.
	resp, err := s.getAt(ctx, op, p, etcdRev, clientv3.WithRange(prefixEnd(p)), clientv3.WithKeysOnly(),
		clientv3.WithMinModRev(modRev))
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		ids[i] = string(kv.Key[len(p):])
	}
	all, err := s.loadEntries(ctx, op, ids, etcdRev)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(e *typesv1.Entry) bool { return e.Revision <= rev }), nil
}

// deletedSince reads the ids with a tombstone above rev. An id that was
// deleted and then created again is live, so it is reported as changed
// only.
func (s *Store) deletedSince(ctx context.Context, op string, rev, etcdRev int64, changed []*typesv1.Entry) ([]string, error) {
	p := s.keys.under(prefixTombstones)
	modRev, _ := splitRevision(rev)
	opts := []clientv3.OpOption{clientv3.WithRange(prefixEnd(p)), clientv3.WithKeysOnly()}
	if modRev > 0 {
		opts = append(opts, clientv3.WithMinModRev(modRev))
	}
	resp, err := s.getAt(ctx, op, p, etcdRev, opts...)
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(changed))
	for _, e := range changed {
		live[e.Id] = true
	}
	var out []string
	for _, kv := range resp.Kvs {
		id := string(kv.Key[len(p):])
		if syncRevision(kv.ModRevision, 0) > rev && !live[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// PruneTombstones drops tombstones with a revision below beforeRevision.
// The compacted revision is raised first, in its own transaction, so that
// EntryChangesSince refuses the revisions whose tombstones may be gone
// before any is: a caller never mistakes a pruned deletion for a live entry.
func (s *Store) PruneTombstones(ctx context.Context, beforeRevision int64) error {
	const op = "prune tombstones"
	if beforeRevision < 0 {
		return fmt.Errorf("%s: revision %d is negative: %w", op, beforeRevision, store.ErrInvalidArgument)
	}
	if err := s.raiseCompacted(ctx, op, beforeRevision); err != nil {
		return err
	}
	var doomed []*mvccpb.KeyValue
	p := s.keys.under(prefixTombstones)
	err := s.scan(ctx, op, p, prefixEnd(p), 0, true, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		if syncRevision(kv.ModRevision, 0) < beforeRevision {
			doomed = append(doomed, kv)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	_, err = s.deleteUnchanged(ctx, op, doomed)
	return err
}

// raiseCompacted sets the compacted revision to beforeRevision-1, but no
// further than the current revision (revisions not yet taken will get
// their tombstones after this prune) and never lower than it was.
func (s *Store) raiseCompacted(ctx context.Context, op string, beforeRevision int64) error {
	return s.retry(ctx, op, func() (bool, error) {
		read, _, err := s.getMany(ctx, op, []string{s.keys.revision(), s.keys.compacted()}, 0)
		if err != nil {
			return false, err
		}
		cur, err := markerRevision(read[s.keys.revision()])
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		var old, seen int64
		if kv := read[s.keys.compacted()]; kv != nil {
			if old, err = parseInt(keyCompacted, kv.Value); err != nil {
				return false, fmt.Errorf("%s: %w", op, err)
			}
			seen = kv.ModRevision
		}
		compacted := min(beforeRevision-1, cur)
		if compacted <= old {
			return true, nil
		}
		resp, err := s.txn(ctx, op,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.compacted()), "=", seen)},
			[]clientv3.Op{clientv3.OpPut(s.keys.compacted(), formatInt(compacted))}, nil)
		return err == nil && resp.Succeeded, err
	})
}

// deleteUnchanged deletes the keys of kvs that still have the mod
// revision they were read with, in transactions of at most readChunk
// operations, and returns how many it deleted. A key written again
// meanwhile is left alone.
func (s *Store) deleteUnchanged(ctx context.Context, op string, kvs []*mvccpb.KeyValue) (int, error) {
	const chunk = readChunk / 2 // a comparison and a delete per key
	n := 0
	for off := 0; off < len(kvs); off += chunk {
		part := kvs[off:min(off+chunk, len(kvs))]
		cmps := make([]clientv3.Cmp, len(part))
		dels := make([]clientv3.Op, len(part))
		for i, kv := range part {
			cmps[i] = clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)
			dels[i] = clientv3.OpDelete(string(kv.Key))
		}
		resp, err := s.txn(ctx, op, cmps, dels, nil)
		if err != nil {
			return n, err
		}
		if resp.Succeeded {
			n += len(part)
			continue
		}
		// Some key changed: delete the others one by one.
		for i := range part {
			resp, err := s.txn(ctx, op, cmps[i:i+1], dels[i:i+1], nil)
			if err != nil {
				return n, err
			}
			if resp.Succeeded {
				n++
			}
		}
	}
	return n, nil
}
