package etcd

import (
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func setEntryRevision(e *typesv1.Entry, rev int64) { e.Revision = rev }

// decodeEntry decodes a stored entry (record or covering index row).
func decodeEntry(kv *mvccpb.KeyValue) (*typesv1.Entry, error) {
	return decodeRecord(kv, &typesv1.Entry{}, setEntryRevision)
}

// entryIndexKeys are the keys one entry occupies besides its record: the
// covering parent row, the duplicate key and one row per selector.
func (s *Store) entryIndexKeys(e *typesv1.Entry) []string {
	sels := records.UniqueStrings(e.Selectors)
	ks := make([]string, 0, 2+len(sels))
	ks = append(ks, s.keys.byParent(e.ParentId)+e.Id, s.keys.dup(e.SpiffeId, e.ParentId, e.Selectors))
	for _, sel := range sels {
		ks = append(ks, s.keys.bySelector(sel)+e.Id)
	}
	return ks
}

// entryPuts writes e, as the sub-th record of its transaction, with every
// index row. skip lists value-less rows e already has (an update keeping
// its selectors): rewriting them would only grow etcd's history.
func (s *Store) entryPuts(e *typesv1.Entry, sub int64, skip map[string]bool) ([]clientv3.Op, error) {
	v, err := marshalRecord(e, sub, setEntryRevision)
	if err != nil {
		return nil, err
	}
	idx := s.entryIndexKeys(e)
	ops := make([]clientv3.Op, 0, 2+len(idx))
	ops = append(ops, clientv3.OpPut(s.keys.entry(e.Id), v), clientv3.OpPut(idx[0], v))
	if k := idx[1]; !skip[k] {
		ops = append(ops, clientv3.OpPut(k, e.Id))
	}
	for _, k := range idx[2:] {
		if !skip[k] {
			ops = append(ops, clientv3.OpPut(k, ""))
		}
	}
	return ops, nil
}

// entryDeletes removes e's record and index rows, but for the keys in keep.
func (s *Store) entryDeletes(e *typesv1.Entry, keep map[string]bool) []clientv3.Op {
	ops := []clientv3.Op{}
	if !keep[s.keys.entry(e.Id)] {
		ops = append(ops, clientv3.OpDelete(s.keys.entry(e.Id)))
	}
	for _, k := range s.entryIndexKeys(e) {
		if !keep[k] {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	return ops
}

// replaceOps moves an entry from prev to next: rows only prev has are
// deleted, rows both have are kept (the selector and duplicate rows hold
// no revision), and the record and parent row are rewritten.
func (s *Store) replaceOps(prev, next *typesv1.Entry) ([]clientv3.Op, error) {
	nextKeys := map[string]bool{s.keys.entry(next.Id): true}
	for _, k := range s.entryIndexKeys(next) {
		nextKeys[k] = true
	}
	unchanged := map[string]bool{}
	for _, k := range s.entryIndexKeys(prev) {
		if nextKeys[k] {
			unchanged[k] = true
		}
	}
	ops := s.entryDeletes(prev, nextKeys)
	puts, err := s.entryPuts(next, 0, unchanged)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", next.Id, err)
	}
	return append(ops, puts...), nil
}
