package bolt

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// CreateEntries stores entries in one transaction; see store.EntryStore.
func (s *Store) CreateEntries(ctx context.Context, entries []*typesv1.Entry) ([]*typesv1.Entry, []error, error) {
	for i, e := range entries {
		if e == nil {
			return nil, nil, fmt.Errorf("create entries: entries[%d] is nil: %w", i, store.ErrInvalidArgument)
		}
	}
	now := s.clock.Now().Unix()
	var created []*typesv1.Entry
	var errs []error
	err := s.update(ctx, "create entries", func(w *writeTx) error {
		batch := make([]*typesv1.Entry, len(entries))
		for i, in := range entries {
			e := proto.Clone(in).(*typesv1.Entry)
			if e.Id == "" {
				e.Id = newEntryID()
			}
			if e.CreatedAt == 0 {
				e.CreatedAt = now
			}
			batch[i] = e
		}
		var err error
		created, errs, err = w.createEntries(batch)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return created, errs, nil
}

// newEntryID returns a UUIDv7: random enough to be unguessable and unique
// across servers, and time-ordered so that new entries append to the id
// indexes instead of rewriting pages all over the B-trees, which more than
// halves the cost of a large batch.
func newEntryID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// createEntries stores each entry of batch whose id and duplicate key are
// free, in the store and in this batch, with its own revision. errs[i]
// says why batch[i] was skipped; an error aborts the transaction.
func (w *writeTx) createEntries(batch []*typesv1.Entry) (created []*typesv1.Entry, errs []error, err error) {
	created = make([]*typesv1.Entry, len(batch))
	errs = make([]error, len(batch))
	ids := make(map[string]bool, len(batch))
	dups := make(map[string]string, len(batch))
	rows := make([]row, 0, len(batch)*8)
	for i, e := range batch {
		dk := string(dupKey(e.SpiffeId, e.ParentId, e.Selectors))
		c := w.entryConflict(e.Id, dk, ids, dups)
		if !c.fine() {
			errs[i] = c.err(e)
			continue
		}
		ids[e.Id] = true
		dups[dk] = e.Id
		e.Revision = w.nextRevision()
		v, err := marshal(e)
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, entryRows(e, v)...)
		w.emit(store.Event{Revision: e.Revision, Kind: store.EventEntry, Entry: proto.Clone(e).(*typesv1.Entry)})
		created[i] = e
	}
	if err := w.putRows(rows); err != nil {
		return nil, nil, err
	}
	return created, errs, nil
}

// entryConflict checks an entry's id and duplicate key against the store
// and against the earlier items of the same batch.
func (w *writeTx) entryConflict(id, dk string, ids map[string]bool, dups map[string]string) conflict {
	if ids[id] || w.bucket(bucketEntries).Get([]byte(id)) != nil {
		return conflict{idTaken: true}
	}
	if id, ok := dups[dk]; ok {
		return conflict{dupOf: id}
	}
	if id := w.bucket(bucketEntryDups).Get([]byte(dk)); id != nil {
		return conflict{dupOf: string(id)}
	}
	return conflict{}
}

// conflict says why an entry cannot be written as asked.
type conflict struct {
	idTaken  bool
	dupOf    string
	notFound bool
	staleRev int64
}

func (c conflict) fine() bool { return c == conflict{} }

func (c conflict) err(e *typesv1.Entry) error {
	switch {
	case c.notFound:
		return fmt.Errorf("entry %q: %w", e.Id, store.ErrNotFound)
	case c.staleRev != 0:
		return fmt.Errorf("entry %q: revision %d is not the stored revision %d: %w", e.Id, e.Revision, c.staleRev, store.ErrConflict)
	case c.idTaken:
		return fmt.Errorf("entry id %q: %w", e.Id, store.ErrAlreadyExists)
	default:
		return fmt.Errorf("entry %q has the same spiffe_id %q, parent_id %q and selectors: %w",
			c.dupOf, e.SpiffeId, e.ParentId, store.ErrAlreadyExists)
	}
}

// UpdateEntry replaces the entry with e.Id; see store.EntryStore.
func (s *Store) UpdateEntry(ctx context.Context, e *typesv1.Entry) (*typesv1.Entry, error) {
	if e == nil {
		return nil, fmt.Errorf("update entry: entry is nil: %w", store.ErrInvalidArgument)
	}
	var out *typesv1.Entry
	err := s.update(ctx, "update entry", func(w *writeTx) error {
		next := proto.Clone(e).(*typesv1.Entry)
		prev, c, err := w.replaceEntry(next)
		if err != nil {
			return err
		}
		if !c.fine() {
			return c.err(e)
		}
		w.emit(store.Event{Revision: next.Revision, Kind: store.EventEntry,
			Entry: proto.Clone(next).(*typesv1.Entry), PrevEntry: prev})
		out = next
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// replaceEntry swaps the stored entry for next, moving every index row.
func (w *writeTx) replaceEntry(next *typesv1.Entry) (*typesv1.Entry, conflict, error) {
	prev, err := w.getEntry(next.Id)
	if err != nil {
		return nil, conflict{}, err
	}
	if prev == nil {
		return nil, conflict{notFound: true}, nil
	}
	if next.Revision != 0 && next.Revision != prev.Revision {
		return nil, conflict{staleRev: prev.Revision}, nil
	}
	if id := w.bucket(bucketEntryDups).Get(dupKey(next.SpiffeId, next.ParentId, next.Selectors)); id != nil && string(id) != next.Id {
		return nil, conflict{dupOf: string(id)}, nil
	}
	if err := w.dropEntry(prev); err != nil {
		return nil, conflict{}, err
	}
	// CreatedAt belongs to the server: an update can neither forge nor lose it.
	next.CreatedAt = prev.CreatedAt
	next.Revision = w.nextRevision()
	return prev, conflict{}, w.putEntry(next)
}

// DeleteEntry removes an entry and leaves a tombstone; see store.EntryStore.
func (s *Store) DeleteEntry(ctx context.Context, id string) (*typesv1.Entry, error) {
	var out *typesv1.Entry
	err := s.update(ctx, "delete entry", func(w *writeTx) error {
		prev, err := w.getEntry(id)
		if err != nil {
			return err
		}
		if prev == nil {
			return fmt.Errorf("entry %q: %w", id, store.ErrNotFound)
		}
		if err := w.dropEntry(prev); err != nil {
			return err
		}
		rev := w.nextRevision()
		if err := w.bucket(bucketTombstones).Put(revKey(rev), []byte(id)); err != nil {
			return fmt.Errorf("put tombstone of entry %q: %w", id, err)
		}
		w.emit(store.Event{Revision: rev, Kind: store.EventEntry, PrevEntry: prev})
		out = proto.Clone(prev).(*typesv1.Entry)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetEntry returns the entry with id, or an error wrapping store.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (*typesv1.Entry, error) {
	var out *typesv1.Entry
	err := s.view(ctx, "get entry", func(tx *bbolt.Tx) error {
		var err error
		out, err = loadEntry(tx.Bucket(bucketEntries), id)
		if err == nil && out == nil {
			err = fmt.Errorf("entry %q: %w", id, store.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// loadEntry reads entry id from b, returning nil if absent.
func loadEntry(b *bbolt.Bucket, id string) (*typesv1.Entry, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	e := &typesv1.Entry{}
	if err := unmarshal(v, e); err != nil {
		return nil, fmt.Errorf("entry %q: %w", id, err)
	}
	return e, nil
}

func (w *writeTx) getEntry(id string) (*typesv1.Entry, error) {
	return loadEntry(w.bucket(bucketEntries), id)
}
