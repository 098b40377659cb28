package bolt

import (
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// row is one key of an entry in one bucket: the record itself or an index
// row pointing at it.
type row struct {
	bucket []byte
	key    []byte
	value  []byte
}

// entryRows lists every row entry e occupies. value is nil for the record
// row when only the keys are needed (to delete them).
func entryRows(e *typesv1.Entry, value []byte) []row {
	id := []byte(e.Id)
	sels := records.UniqueStrings(e.Selectors)
	rows := make([]row, 0, 5+len(sels))
	rows = append(rows,
		row{bucketEntries, id, value},
		row{bucketEntryDups, dupKey(e.SpiffeId, e.ParentId, e.Selectors), id},
		row{bucketByParent, indexKey(e.ParentId, e.Id), []byte{}},
		row{bucketBySPIFFEID, indexKey(e.SpiffeId, e.Id), []byte{}},
		row{bucketByRevision, revKey(e.Revision), id},
	)
	for _, sel := range sels {
		rows = append(rows, row{bucketBySelector, indexKey(sel, e.Id), []byte{}})
	}
	return rows
}

// putEntry writes e and all of its index rows.
func (w *writeTx) putEntry(e *typesv1.Entry) error {
	v, err := marshal(e)
	if err != nil {
		return err
	}
	return w.putRows(entryRows(e, v))
}

// putRows writes rows in order.
func (w *writeTx) putRows(rows []row) error {
	for _, r := range rows {
		if err := w.bucket(r.bucket).Put(r.key, r.value); err != nil {
			return fmt.Errorf("put %q in %s: %w", r.key, r.bucket, err)
		}
	}
	return nil
}

// dropEntry removes the stored entry e and all of its index rows.
func (w *writeTx) dropEntry(e *typesv1.Entry) error {
	for _, r := range entryRows(e, nil) {
		if err := w.bucket(r.bucket).Delete(r.key); err != nil {
			return fmt.Errorf("delete entry %q from %s: %w", e.Id, r.bucket, err)
		}
	}
	return nil
}
