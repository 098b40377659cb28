package bolt

import (
	"context"
	"errors"
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

// writeReq is one write waiting for a commit.
type writeReq struct {
	ctx context.Context
	fn  func(w *writeTx) error
	// err is the outcome; lead asks the woken caller to commit the queue
	// instead. Both are set before wake is closed.
	err  error
	lead bool
	wake chan struct{}
}

// maxGroup bounds the writes one commit takes.
const maxGroup = 128

// commitQueued commits queued writes, its caller's among them, as the
// leader. Writes queued while a commit is in progress wait for it, and the
// next commit takes them all at once (group commit): concurrent writers
// share the page writes and the two fsyncs of a bbolt commit instead of
// queueing for their own. A lone write commits at once, as it would
// without the queue. When writes remain queued after its commit, the
// leader hands over to the first of their callers, so that nobody commits
// more than one group for others. The caller is the leader (s.leading).
func (s *Store) commitQueued() {
	s.qmu.Lock()
	n := min(len(s.queue), maxGroup)
	batch := s.queue[:n:n]
	if n == len(s.queue) {
		s.queue = nil
	} else {
		s.queue = append([]*writeReq(nil), s.queue[n:]...)
	}
	s.qmu.Unlock()
	done := false
	defer func() {
		if !done { // a write panicked: fail the group and keep the store usable
			for _, r := range batch {
				r.err = errors.New("a write of the same commit panicked")
			}
		}
		s.qmu.Lock()
		if len(s.queue) > 0 {
			s.queue[0].lead = true
			close(s.queue[0].wake)
		} else {
			s.leading = false
		}
		s.qmu.Unlock()
		for _, r := range batch {
			if !r.lead { // the leader is not waiting; its wake may be closed
				close(r.wake)
			}
		}
	}()
	s.commit(batch)
	done = true
}

// commit runs the batch's writes in one transaction. A write that fails,
// or whose caller gives up meanwhile, rolls the shared transaction back;
// each write then runs again in a transaction of its own, so that one
// failure costs the others a retry, never their outcome.
func (s *Store) commit(batch []*writeReq) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make([]*writeReq, 0, len(batch))
	for _, r := range batch {
		switch {
		case s.closed.Load():
			r.err = store.ErrClosed
		case r.ctx.Err() != nil:
			r.err = r.ctx.Err()
		default:
			live = append(live, r)
		}
	}
	if len(live) > 1 && s.runLocked(live) == nil {
		return
	}
	for _, r := range live {
		r.err = s.runLocked([]*writeReq{r})
	}
}

// runLocked runs writes in one transaction, commits it and publishes the
// events; on any failure nothing is committed and the first error is
// returned. The caller holds s.mu, so watchers see events in commit order.
func (s *Store) runLocked(writes []*writeReq) error {
	var events []store.Event
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w, err := newWriteTx(tx)
		if err != nil {
			return err
		}
		for _, r := range writes {
			if err := r.fn(w); err != nil {
				return err
			}
			// A caller that gave up must not find its write committed later.
			if err := r.ctx.Err(); err != nil {
				return err
			}
		}
		if err := w.finish(); err != nil {
			return err
		}
		events = w.events
		return nil
	})
	if err != nil {
		return err
	}
	s.commits.Add(1)
	s.publishLocked(events)
	return nil
}
