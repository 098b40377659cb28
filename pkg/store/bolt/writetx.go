package bolt

import (
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
)

// writeTx is one write transaction: the bbolt transaction, the revision
// counter as it advances, and the events to publish once it commits.
type writeTx struct {
	tx      *bbolt.Tx
	baseRev int64
	rev     int64
	events  []store.Event
}

func newWriteTx(tx *bbolt.Tx) (*writeTx, error) {
	rev, err := readRevision(tx)
	if err != nil {
		return nil, err
	}
	for _, name := range appendBuckets {
		tx.Bucket(name).FillPercent = appendFillPercent
	}
	return &writeTx{tx: tx, baseRev: rev, rev: rev}, nil
}

// appendBuckets are keyed by revisions or by time-ordered ids, so nearly all
// inserts land at the end of a key range. bbolt splits full pages in half
// by default, which leaves every page of an append-only B-tree half empty;
// filling them instead halves the pages a batch writes and keeps.
var appendBuckets = [][]byte{bucketEntries, bucketByRevision, bucketTombstones, bucketByParent, bucketBySelector, bucketLedgerByExp}

const appendFillPercent = 0.9

// nextRevision takes the next global revision for one record change.
func (w *writeTx) nextRevision() int64 {
	w.rev++
	return w.rev
}

// emit records an event; its records must not be modified afterwards
// because watchers share them.
func (w *writeTx) emit(ev store.Event) {
	w.events = append(w.events, ev)
}

// finish persists the revision counter if the transaction advanced it.
func (w *writeTx) finish() error {
	if w.rev == w.baseRev {
		return nil
	}
	if err := w.tx.Bucket(bucketMeta).Put(metaRevision, revKey(w.rev)); err != nil {
		return fmt.Errorf("store revision %d: %w", w.rev, err)
	}
	return nil
}

// bucket returns a bucket that initSchema guarantees exists.
func (w *writeTx) bucket(name []byte) *bbolt.Bucket { return w.tx.Bucket(name) }
