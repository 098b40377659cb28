package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ListGrants pages through grants newest first; see store.GrantStore. One
// index drives the scan (SPIFFE ID and status together, else SPIFFE ID,
// else the entries, else status, else creation order) and the grants it
// yields are checked against the other filters.
func (s *Store) ListGrants(ctx context.Context, req store.ListGrantsRequest) ([]*typesv1.Grant, string, error) {
	if req.PageSize < 0 {
		return nil, "", fmt.Errorf("list grants: page_size %d is negative: %w", req.PageSize, store.ErrInvalidArgument)
	}
	before, err := decodeGrantPageToken(req.PageToken)
	if err != nil {
		return nil, "", fmt.Errorf("list grants: %w", err)
	}
	var out []*typesv1.Grant
	var next string
	err = s.view(ctx, "list grants", func(tx *bbolt.Tx) error {
		match := grantFilter(req)
		grants := tx.Bucket(bucketGrants)
		scanned := 0
		for order := range mergeNewestFirst(grantCursors(tx, req, before)) {
			if scanned++; scanned%ctxCheckEvery == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			g, err := loadIndexedGrant(grants, order)
			if err != nil {
				return err
			}
			if !match(g) {
				continue
			}
			if req.PageSize > 0 && len(out) == req.PageSize {
				// One match beyond the page proves there is a next page.
				last := out[len(out)-1]
				next = records.EncodePageToken(string(grantOrderKey(last.CreatedAt, last.Id)))
				return nil
			}
			out = append(out, g)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// decodeGrantPageToken returns the order key a page continues after.
func decodeGrantPageToken(token string) ([]byte, error) {
	k, err := records.DecodePageToken(token)
	if err != nil || k == "" {
		return nil, err
	}
	if len(k) <= 8 {
		return nil, fmt.Errorf("page_token is malformed: %w", store.ErrInvalidArgument)
	}
	return []byte(k), nil
}

// grantCursors opens the cursors of the index that drives req's scan.
func grantCursors(tx *bbolt.Tx, req store.ListGrantsRequest, before []byte) []*revCursor {
	st := statusField(req.Status)
	switch {
	case req.SpiffeID != "" && req.Status != typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED:
		prefix := appendField(appendField(nil, req.SpiffeID), st)
		return []*revCursor{newRevCursor(tx, bucketGrantBySPIFFEStatus, prefix, before)}
	case req.SpiffeID != "":
		return []*revCursor{newRevCursor(tx, bucketGrantBySPIFFE, appendField(nil, req.SpiffeID), before)}
	case len(req.EntryIDs) > 0:
		ids := records.UniqueStrings(req.EntryIDs)
		cursors := make([]*revCursor, len(ids))
		for i, id := range ids {
			cursors[i] = newRevCursor(tx, bucketGrantByEntry, appendField(nil, id), before)
		}
		return cursors
	case req.Status != typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED:
		return []*revCursor{newRevCursor(tx, bucketGrantByStatus, appendField(nil, st), before)}
	}
	return []*revCursor{newRevCursor(tx, bucketGrantByCreated, nil, before)}
}

// grantFilter checks a grant against every filter of req; the driving
// index has answered some of them already, which costs nothing to repeat.
func grantFilter(req store.ListGrantsRequest) func(*typesv1.Grant) bool {
	entries := make(map[string]bool, len(req.EntryIDs))
	for _, id := range req.EntryIDs {
		entries[id] = true
	}
	return func(g *typesv1.Grant) bool {
		switch {
		case req.SpiffeID != "" && g.SpiffeId != req.SpiffeID:
			return false
		case req.Status != typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED && g.Status != req.Status:
			return false
		case len(entries) > 0 && !entries[g.EntryId]:
			return false
		}
		return true
	}
}

// mergeNewestFirst yields the order keys of all cursors, newest first. A
// grant has one row per index value, so no key appears twice.
func mergeNewestFirst(cursors []*revCursor) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for {
			var top *revCursor
			for _, rc := range cursors {
				if rc.order != nil && (top == nil || bytes.Compare(rc.order, top.order) > 0) {
					top = rc
				}
			}
			if top == nil {
				return
			}
			// The cursor's slice is only valid until it moves.
			order := bytes.Clone(top.order)
			top.prev()
			if !yield(order) {
				return
			}
		}
	}
}

// loadIndexedGrant reads the grant an order key names; a missing grant
// means the indexes are corrupt, which must not pass silently.
func loadIndexedGrant(b *bbolt.Bucket, order []byte) (*typesv1.Grant, error) {
	if len(order) <= 8 {
		return nil, errors.New("corrupt grant index row")
	}
	g, err := loadGrant(b, string(order[8:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("index row for missing grant %q", order[8:])
	}
	return g, err
}

// GrantUsage reads the usage counters in one read transaction: one pass
// over the subject's grants of the last day, which also counts those of
// the last hour and minute, and one over its live ACTIVE grants.
func (s *Store) GrantUsage(ctx context.Context, spiffeID string, now time.Time) (store.GrantUsage, error) {
	if spiffeID == "" {
		return store.GrantUsage{}, fmt.Errorf("grant usage: spiffe_id is empty: %w", store.ErrInvalidArgument)
	}
	hour, minute := now.Add(-time.Hour).Unix(), now.Add(-time.Minute).Unix()
	var u store.GrantUsage
	err := s.view(ctx, "grant usage", func(tx *bbolt.Tx) error {
		err := scanCreatedSince(ctx, tx, spiffeID, now.Add(-24*time.Hour).Unix(), func(created int64) {
			u.LastDay++
			if created >= hour {
				u.LastHour++
			}
			if created >= minute {
				u.LastMinute++
			}
		})
		if err != nil {
			return err
		}
		u.Active, err = countActive(ctx, tx, spiffeID, now)
		return err
	})
	if err != nil {
		return store.GrantUsage{}, err
	}
	return u, nil
}

// scanCreatedSince calls fn with the created_at of each of spiffeID's
// grants created at or after since (in seconds), oldest first, from the
// index keys alone.
func scanCreatedSince(ctx context.Context, tx *bbolt.Tx, spiffeID string, since int64, fn func(created int64)) error {
	prefix := appendField(nil, spiffeID)
	start := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(since, 0)))
	c := tx.Bucket(bucketGrantBySPIFFE).Cursor()
	n := 0
	for k, _ := c.Seek(start); hasPrefix(k, prefix); k, _ = c.Next() {
		if n++; n%ctxCheckEvery == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if len(k) < len(prefix)+8 {
			return errors.New("corrupt grant index row")
		}
		fn(int64(binary.BigEndian.Uint64(k[len(prefix):])))
	}
	return nil
}

// countActive counts spiffeID's ACTIVE grants that expire after at.
func countActive(ctx context.Context, tx *bbolt.Tx, spiffeID string, at time.Time) (int, error) {
	prefix := appendField(nil, spiffeID)
	start := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(at.Unix()+1, 0)))
	c := tx.Bucket(bucketGrantActive).Cursor()
	n := 0
	for k, _ := c.Seek(start); hasPrefix(k, prefix); k, _ = c.Next() {
		if n++; n%ctxCheckEvery == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return n, nil
}

// PruneGrants drops grants whose end (ended_at, else expires_at) is before
// endedBefore and returns how many it dropped. Pruning is not an event.
func (s *Store) PruneGrants(ctx context.Context, endedBefore time.Time) (int, error) {
	cutoff := endedBefore.Unix()
	if time.Unix(cutoff, 0).Before(endedBefore) {
		// A grant ending within the cutoff second still ended before it.
		cutoff++
	}
	if cutoff <= 0 {
		return 0, nil
	}
	var n int
	err := s.update(ctx, "prune grants", func(w *writeTx) error {
		n = 0 // a write may run again (see update)
		end := binary.BigEndian.AppendUint64(nil, uint64(cutoff))
		grants := w.bucket(bucketGrants)
		c := w.bucket(bucketGrantByEnd).Cursor()
		// Each drop deletes the row the cursor is on, so First is the next.
		for k, _ := c.First(); k != nil && bytes.Compare(k, end) < 0; k, _ = c.First() {
			if len(k) <= 8 {
				return errors.New("corrupt grant end row")
			}
			g, err := loadGrant(grants, string(k[8:]))
			if err != nil {
				return err
			}
			if err := w.dropGrant(g); err != nil {
				return err
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
