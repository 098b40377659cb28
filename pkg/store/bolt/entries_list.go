package bolt

import (
	"context"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"slices"
	"strings"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ctxCheckEvery bounds how long a scan runs on after its context ended.
const ctxCheckEvery = 1024

// ListEntries pages through entries ordered by id; see store.EntryStore.
// Filters are answered by intersecting their index rows, so the cost follows
// the number of matches rather than the number of entries.
func (s *Store) ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error) {
	if req.PageSize < 0 {
		return nil, "", fmt.Errorf("list entries: page_size %d is negative: %w", req.PageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(req.PageToken)
	if err != nil {
		return nil, "", fmt.Errorf("list entries: %w", err)
	}
	var out []*typesv1.Entry
	var next string
	err = s.view(ctx, "list entries", func(tx *bbolt.Tx) error {
		entries := tx.Bucket(bucketEntries)
		n := 0
		return scanEntryIDs(tx, req, after, func(id string) (bool, error) {
			if n++; n%ctxCheckEvery == 0 && ctx.Err() != nil {
				return false, ctx.Err()
			}
			if req.PageSize > 0 && len(out) == req.PageSize {
				// One match beyond the page proves there is a next page.
				next = records.EncodePageToken(out[len(out)-1].Id)
				return false, nil
			}
			e, err := loadIndexedEntry(entries, id)
			if err != nil {
				return false, err
			}
			out = append(out, e)
			return true, nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// scanEntryIDs calls yield, in id order, for each entry id after `after`
// matching req's filters, until yield returns false or an error.
func scanEntryIDs(tx *bbolt.Tx, req store.ListEntriesRequest, after string, yield func(id string) (bool, error)) error {
	var cursors []*indexCursor
	if req.SpiffeID != "" {
		cursors = append(cursors, newIndexCursor(tx, bucketBySPIFFEID, req.SpiffeID))
	}
	if req.ParentID != "" {
		cursors = append(cursors, newIndexCursor(tx, bucketByParent, req.ParentID))
	}
	for _, sel := range records.UniqueStrings(req.Selectors) {
		cursors = append(cursors, newIndexCursor(tx, bucketBySelector, sel))
	}
	start := ""
	if after != "" {
		start = string(afterKey(after))
	}
	if len(cursors) == 0 {
		return scanAll(tx.Bucket(bucketEntries).Cursor(), start, yield)
	}
	return intersect(cursors, start, yield)
}

func scanAll(c *bbolt.Cursor, start string, yield func(id string) (bool, error)) error {
	for k, _ := c.Seek([]byte(start)); k != nil; k, _ = c.Next() {
		if more, err := yield(string(k)); err != nil || !more {
			return err
		}
	}
	return nil
}

// indexCursor walks the ids stored under one value of a value → ids index.
type indexCursor struct {
	c      *bbolt.Cursor
	prefix []byte
	cur    string // last id read; valid when positioned
	pos    bool
}

func newIndexCursor(tx *bbolt.Tx, bucket []byte, value string) *indexCursor {
	return &indexCursor{c: tx.Bucket(bucket).Cursor(), prefix: appendField(nil, value)}
}

// seek positions the cursor at the first id >= target; ok is false when the
// value has no more ids.
func (ic *indexCursor) seek(target string) (id string, ok bool) {
	if ic.pos && ic.cur >= target {
		return ic.cur, true
	}
	k, _ := ic.c.Seek(append(slices.Clip(ic.prefix), target...))
	return ic.position(k)
}

// next moves to the id after the current one.
func (ic *indexCursor) next() (id string, ok bool) {
	k, _ := ic.c.Next()
	return ic.position(k)
}

func (ic *indexCursor) position(k []byte) (string, bool) {
	if !hasPrefix(k, ic.prefix) {
		ic.pos = false
		return "", false
	}
	ic.cur, ic.pos = string(k[len(ic.prefix):]), true
	return ic.cur, true
}

// intersect yields, in order, the ids present in every cursor's value at or
// after start: a leapfrog join, which skips ahead to the largest id any
// cursor has reached instead of reading every row.
func intersect(cursors []*indexCursor, start string, yield func(id string) (bool, error)) error {
	target := start
	for {
		match := true
		for _, ic := range cursors {
			id, ok := ic.seek(target)
			if !ok {
				return nil
			}
			if id != target {
				target, match = id, false
				break
			}
		}
		if !match {
			continue
		}
		if more, err := yield(target); err != nil || !more {
			return err
		}
		target = string(afterKey(target))
	}
}

// ListEntriesByParent returns the entries under any of parentIDs, ordered by
// id, with the revision they were read at.
func (s *Store) ListEntriesByParent(ctx context.Context, parentIDs []string) ([]*typesv1.Entry, int64, error) {
	var out []*typesv1.Entry
	var rev int64
	err := s.view(ctx, "list entries by parent", func(tx *bbolt.Tx) error {
		var err error
		if rev, err = readRevision(tx); err != nil {
			return err
		}
		parents := records.UniqueStrings(parentIDs)
		for _, p := range parents {
			if out, err = appendByParent(ctx, tx, p, out); err != nil {
				return err
			}
		}
		if len(parents) > 1 {
			slices.SortFunc(out, func(a, b *typesv1.Entry) int { return strings.Compare(a.Id, b.Id) })
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// appendByParent appends the entries under parent to out, in id order.
func appendByParent(ctx context.Context, tx *bbolt.Tx, parent string, out []*typesv1.Entry) ([]*typesv1.Entry, error) {
	entries := tx.Bucket(bucketEntries)
	ic := newIndexCursor(tx, bucketByParent, parent)
	for id, ok := ic.seek(""); ok; id, ok = ic.next() {
		if len(out)%ctxCheckEvery == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e, err := loadIndexedEntry(entries, id)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// loadIndexedEntry reads an entry an index row points at; a missing entry
// means the indexes are corrupt, which must not pass silently.
func loadIndexedEntry(b *bbolt.Bucket, id string) (*typesv1.Entry, error) {
	e, err := loadEntry(b, id)
	if err == nil && e == nil {
		err = fmt.Errorf("index row for missing entry %q", id)
	}
	return e, err
}

// CountEntries returns the number of entries.
func (s *Store) CountEntries(ctx context.Context) (int, error) {
	var n int
	err := s.view(ctx, "count entries", func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketEntries).Stats().KeyN
		return nil
	})
	return n, err
}
