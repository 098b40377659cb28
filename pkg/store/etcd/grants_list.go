package etcd

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ListGrants pages through grants newest first; see store.GrantStore. One
// index drives the scan (SPIFFE ID and status together, else SPIFFE ID,
// else the entries, merged, else status, else creation order) and the
// grants it yields are checked against the other filters.
func (s *Store) ListGrants(ctx context.Context, req store.ListGrantsRequest) ([]*typesv1.Grant, string, error) {
	const op = "list grants"
	if req.PageSize < 0 {
		return nil, "", fmt.Errorf("%s: page_size %d is negative: %w", op, req.PageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(req.PageToken)
	if err == nil && after != "" {
		_, err = orderID(after)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: page_token is malformed: %w", op, store.ErrInvalidArgument)
	}
	var out []*typesv1.Grant
	var next string
	err = s.readAt(ctx, op, func(rev, _ int64) error {
		out, next = nil, ""
		match := grantFilter(req)
		m := s.newOrderMerge(s.grantDriverPrefixes(req), after, rev, pageHint(req.PageSize))
		for {
			orders, err := m.take(ctx, op)
			if err != nil || len(orders) == 0 {
				return err
			}
			grants, err := s.loadGrants(ctx, op, orders, rev)
			if err != nil {
				return err
			}
			for _, g := range grants {
				if !match(g) {
					continue
				}
				if req.PageSize > 0 && len(out) == req.PageSize {
					// One match beyond the page proves there is a next page.
					last := out[len(out)-1]
					next = records.EncodePageToken(orderKey(last.CreatedAt, last.Id))
					return nil
				}
				out = append(out, g)
			}
		}
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// grantDriverPrefixes are the index ranges that drive req's scan.
func (s *Store) grantDriverPrefixes(req store.ListGrantsRequest) []string {
	st := field(req.Status.String())
	any := req.Status == typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED
	switch {
	case req.SpiffeID != "" && !any:
		return []string{s.keys.under(prefixGrantBySPIFFEStatus) + field(req.SpiffeID) + st}
	case req.SpiffeID != "":
		return []string{s.keys.under(prefixGrantBySPIFFE) + field(req.SpiffeID)}
	case len(req.EntryIDs) > 0:
		var ps []string
		for _, id := range records.UniqueStrings(req.EntryIDs) {
			ps = append(ps, s.keys.under(prefixGrantByEntry)+field(id))
		}
		return ps
	case !any:
		return []string{s.keys.under(prefixGrantByStatus) + st}
	}
	return []string{s.keys.under(prefixGrantByCreated)}
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

// loadGrants reads the grants the order keys name, at rev, in order; a
// missing one means the indexes are corrupt, which must not pass silently.
func (s *Store) loadGrants(ctx context.Context, op string, orders []string, rev int64) ([]*typesv1.Grant, error) {
	ks := make([]string, len(orders))
	for i, o := range orders {
		id, err := orderID(o)
		if err != nil {
			return nil, fmt.Errorf("%s: corrupt grant index row: %w", op, err)
		}
		ks[i] = s.keys.grant(id)
	}
	read, _, err := s.getMany(ctx, op, ks, rev)
	if err != nil {
		return nil, err
	}
	out := make([]*typesv1.Grant, len(ks))
	for i, k := range ks {
		kv := read[k]
		if kv == nil {
			return nil, fmt.Errorf("%s: index row for missing grant %q", op, k)
		}
		if out[i], err = decodeGrant(kv); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return out, nil
}

// GrantUsage reads the four usage counters in one read-only transaction:
// one round trip, and counts from one snapshot.
func (s *Store) GrantUsage(ctx context.Context, spiffeID string, now time.Time) (store.GrantUsage, error) {
	const op = "grant usage"
	if spiffeID == "" {
		return store.GrantUsage{}, fmt.Errorf("%s: spiffe_id is empty: %w", op, store.ErrInvalidArgument)
	}
	created := s.keys.under(prefixGrantBySPIFFE) + field(spiffeID)
	since := func(d time.Duration) clientv3.Op {
		// Order keys start with the complement of created_at, so the
		// grants created at or after a time sort first: they end before
		// the complement of that time, plus one.
		end := prefixEnd(created)
		if from := max(now.Add(-d).Unix(), 0); from > 0 {
			end = created + string(binary.BigEndian.AppendUint64(nil, math.MaxUint64-uint64(from)+1))
		}
		return clientv3.OpGet(created, clientv3.WithRange(end), clientv3.WithCountOnly())
	}
	active := s.keys.under(prefixGrantActive) + field(spiffeID)
	liveFrom := active + string(binary.BigEndian.AppendUint64(nil, uint64(max(now.Unix()+1, 0))))
	resp, err := s.txn(ctx, op, nil, []clientv3.Op{
		since(time.Minute), since(time.Hour), since(24 * time.Hour),
		clientv3.OpGet(liveFrom, clientv3.WithRange(prefixEnd(active)), clientv3.WithCountOnly()),
	}, nil)
	if err != nil {
		return store.GrantUsage{}, err
	}
	if len(resp.Responses) != 4 {
		return store.GrantUsage{}, fmt.Errorf("%s: etcd answered %d of 4 counts", op, len(resp.Responses))
	}
	count := func(i int) int { return int(resp.Responses[i].GetResponseRange().GetCount()) }
	return store.GrantUsage{LastMinute: count(0), LastHour: count(1), LastDay: count(2), Active: count(3)}, nil
}

// PruneGrants drops grants whose end (ended_at, else expires_at) is before
// endedBefore and returns how many it dropped. Pruning is not an event. A
// grant updated while the prune runs is kept until the next one.
func (s *Store) PruneGrants(ctx context.Context, endedBefore time.Time) (int, error) {
	const op = "prune grants"
	cutoff := endedBefore.Unix()
	if time.Unix(cutoff, 0).Before(endedBefore) {
		// A grant ending within the cutoff second still ended before it.
		cutoff++
	}
	if cutoff <= 0 {
		return 0, s.check(ctx, op)
	}
	p := s.keys.under(prefixGrantByEnd)
	end := p + string(binary.BigEndian.AppendUint64(nil, uint64(cutoff)))
	var ids []string
	err := s.scan(ctx, op, p, end, 0, true, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		if len(kv.Key) <= len(p)+8 {
			return false, fmt.Errorf("%s: corrupt grant end row %q", op, kv.Key)
		}
		ids = append(ids, string(kv.Key[len(p)+8:]))
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	ks := make([]string, len(ids))
	for i, id := range ids {
		ks[i] = s.keys.grant(id)
	}
	read, _, err := s.getMany(ctx, op, ks, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range ks {
		kv := read[k]
		if kv == nil {
			continue // dropped by another server's prune meanwhile
		}
		dropped, err := s.dropGrant(ctx, op, kv)
		if err != nil {
			return n, err
		}
		if dropped {
			n++
		}
	}
	return n, nil
}

// dropGrant deletes a grant and its index rows unless it changed since it
// was read.
func (s *Store) dropGrant(ctx context.Context, op string, kv *mvccpb.KeyValue) (bool, error) {
	g, err := decodeGrant(kv)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	ops := append([]clientv3.Op{clientv3.OpDelete(string(kv.Key))}, s.grantIndexOps(g, nil)...)
	resp, err := s.txn(ctx, op, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)}, ops, nil)
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}
