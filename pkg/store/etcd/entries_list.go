package etcd

import (
	"context"
	"errors"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// compactedRetries bounds how often a multi-request read starts over after
// etcd compacted the revision it was pinned to under it.
const compactedRetries = 3

// readAt runs fn with the etcd revision and sync revision of a fresh
// linearizable read; fn pins every read to that etcd revision, so that
// together they see one consistent state.
func (s *Store) readAt(ctx context.Context, op string, fn func(etcdRev, syncRev int64) error) error {
	for i := 0; ; i++ {
		resp, err := s.get(ctx, op, s.keys.revision())
		if err != nil {
			return err
		}
		rev, err := markerRevision(first(resp.Kvs))
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		err = fn(resp.Header.Revision, rev)
		if !errors.Is(err, rpctypes.ErrCompacted) || i == compactedRetries {
			return err
		}
	}
}

// ListEntries pages through entries ordered by id; see store.EntryStore.
// One index drives the scan (the smallest of the filters, by count) and
// the entries it yields are checked against the other filters.
func (s *Store) ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error) {
	const op = "list entries"
	if req.PageSize < 0 {
		return nil, "", fmt.Errorf("%s: page_size %d is negative: %w", op, req.PageSize, store.ErrInvalidArgument)
	}
	after, err := records.DecodePageToken(req.PageToken)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	var out []*typesv1.Entry
	var next string
	err = s.readAt(ctx, op, func(rev, _ int64) error {
		out, next = nil, ""
		match := entryFilter(req)
		d, err := s.chooseDriver(ctx, op, req, rev)
		if err != nil {
			return err
		}
		return s.drive(ctx, op, d, rev, after, pageHint(req.PageSize), func(chunk []*typesv1.Entry) bool {
			for _, e := range chunk {
				if !match(e) {
					continue
				}
				if req.PageSize > 0 && len(out) == req.PageSize {
					// One match beyond the page proves there is a next page.
					next = records.EncodePageToken(out[len(out)-1].Id)
					return false
				}
				out = append(out, e)
			}
			return true
		})
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// pageHint is how many index rows a listing of pageSize likely reads: the
// page and one more, or everything.
func pageHint(pageSize int) int64 {
	if pageSize == 0 {
		return 0
	}
	return int64(pageSize) + 1
}

// entryFilter checks an entry against every filter of req.
func entryFilter(req store.ListEntriesRequest) func(*typesv1.Entry) bool {
	return func(e *typesv1.Entry) bool {
		if req.SpiffeID != "" && e.SpiffeId != req.SpiffeID || req.ParentID != "" && e.ParentId != req.ParentID {
			return false
		}
		for _, sel := range req.Selectors {
			if !slices.Contains(e.Selectors, sel) {
				return false
			}
		}
		return true
	}
}

// driverKind names the index a listing scans.
type driverKind int

const (
	driveAll driverKind = iota
	driveParent
	driveSelector
	driveSPIFFEID
)

// driver is the index a listing scans and the value it scans for.
type driver struct {
	kind  driverKind
	value string
}

// chooseDriver picks the filter with the fewest index rows.
func (s *Store) chooseDriver(ctx context.Context, op string, req store.ListEntriesRequest, rev int64) (driver, error) {
	var cands []driver
	if req.SpiffeID != "" {
		cands = append(cands, driver{driveSPIFFEID, req.SpiffeID})
	}
	if req.ParentID != "" {
		cands = append(cands, driver{driveParent, req.ParentID})
	}
	for _, sel := range records.UniqueStrings(req.Selectors) {
		cands = append(cands, driver{driveSelector, sel})
	}
	switch len(cands) {
	case 0:
		return driver{kind: driveAll}, nil
	case 1:
		return cands[0], nil
	}
	counts := make([]int64, len(cands))
	for off := 0; off < len(cands); off += readChunk {
		chunk := cands[off:min(off+readChunk, len(cands))]
		// etcd counts from its in-memory index, reading no value (and,
		// before 3.7's RangeStream, walks a whole range for any read of
		// it: a limit would save nothing).
		resp, err := s.readOps(ctx, op, rev, func(pin ...clientv3.OpOption) []clientv3.Op {
			ops := make([]clientv3.Op, len(chunk))
			for i, d := range chunk {
				p := s.driverPrefix(d)
				ops[i] = clientv3.OpGet(p, append([]clientv3.OpOption{clientv3.WithRange(prefixEnd(p)), clientv3.WithCountOnly()}, pin...)...)
			}
			return ops
		})
		if err != nil {
			return driver{}, err
		}
		for i, r := range resp.Responses {
			counts[off+i] = r.GetResponseRange().GetCount()
		}
	}
	best := 0
	for i, c := range counts {
		if c < counts[best] {
			best = i
		}
	}
	return cands[best], nil
}

// driverPrefix is the key prefix of d's index rows.
func (s *Store) driverPrefix(d driver) string {
	switch d.kind {
	case driveParent:
		return s.keys.byParent(d.value)
	case driveSelector:
		return s.keys.bySelector(d.value)
	case driveSPIFFEID:
		return s.keys.bySPIFFEID(d.value)
	}
	return s.keys.under(prefixEntries)
}

// drive calls fn with chunks of the entries d's index holds, in id order,
// after the id `after`, until fn returns false. page is the chunk size to
// start with (a page of the listing and one more entry).
func (s *Store) drive(ctx context.Context, op string, d driver, rev int64, after string, page int64, fn func([]*typesv1.Entry) bool) error {
	p := s.driverPrefix(d)
	start := p
	if after != "" {
		start = p + afterKey(after)
	}
	switch d.kind {
	case driveAll, driveParent:
		// Both hold whole entries, keyed by id under the prefix.
		return s.scanChunks(ctx, op, start, prefixEnd(p), rev, false, page, func(kvs []*mvccpb.KeyValue) (bool, error) {
			es, err := decodeEntries(kvs)
			return err == nil && fn(es), err
		})
	case driveSelector:
		return s.scanChunks(ctx, op, start, prefixEnd(p), rev, true, page, func(kvs []*mvccpb.KeyValue) (bool, error) {
			ids := make([]string, len(kvs))
			for i, kv := range kvs {
				ids[i] = string(kv.Key[len(p):])
			}
			es, err := s.loadEntries(ctx, op, ids, rev)
			return err == nil && fn(es), err
		})
	}
	// The SPIFFE ID rows are ordered by parent, not id: sort them first.
	var ids []string
	err := s.scan(ctx, op, p, prefixEnd(p), rev, false, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		if id := string(kv.Value); id > after {
			ids = append(ids, id)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	slices.Sort(ids)
	for off := 0; off < len(ids); off += rangePage {
		es, err := s.loadEntries(ctx, op, ids[off:min(off+rangePage, len(ids))], rev)
		if err != nil || !fn(es) {
			return err
		}
	}
	return nil
}

// scanChunks is scan handing over each page whole.
func (s *Store) scanChunks(ctx context.Context, op, start, end string, rev int64, keysOnly bool, page int64, fn func([]*mvccpb.KeyValue) (bool, error)) error {
	// Small pages of a filtered listing would take one request per few
	// candidates; a few dozen keys cost about as much as one.
	if page <= 0 {
		page = rangePage
	}
	page = min(max(page, 64), rangePage)
	var buf []*mvccpb.KeyValue
	flush := func() (bool, error) {
		more, err := fn(buf)
		buf = buf[:0]
		return more, err
	}
	stopped := false
	err := s.scan(ctx, op, start, end, rev, keysOnly, page, func(kv *mvccpb.KeyValue) (bool, error) {
		buf = append(buf, kv)
		if int64(len(buf)) < page {
			return true, nil
		}
		more, err := flush()
		stopped = !more
		return more, err
	})
	if err != nil || stopped || len(buf) == 0 {
		return err
	}
	_, err = flush()
	return err
}

// loadEntries reads the entries with ids at rev, in the order of ids; a
// missing one means the indexes are corrupt, which must not pass silently.
func (s *Store) loadEntries(ctx context.Context, op string, ids []string, rev int64) ([]*typesv1.Entry, error) {
	ks := make([]string, len(ids))
	for i, id := range ids {
		ks[i] = s.keys.entry(id)
	}
	read, _, err := s.getMany(ctx, op, ks, rev)
	if err != nil {
		return nil, err
	}
	out := make([]*typesv1.Entry, len(ids))
	for i, k := range ks {
		kv := read[k]
		if kv == nil {
			return nil, fmt.Errorf("%s: index row for missing entry %q", op, ids[i])
		}
		if out[i], err = decodeEntry(kv); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return out, nil
}

func decodeEntries(kvs []*mvccpb.KeyValue) ([]*typesv1.Entry, error) {
	out := make([]*typesv1.Entry, len(kvs))
	for i, kv := range kvs {
		e, err := decodeEntry(kv)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// ListEntriesByParent returns the entries under any of parentIDs, ordered
// by id, with the revision they were read at. Each parent is one range of
// covering rows: no entry is read twice.
func (s *Store) ListEntriesByParent(ctx context.Context, parentIDs []string) ([]*typesv1.Entry, int64, error) {
	const op = "list entries by parent"
	var out []*typesv1.Entry
	var at int64
	err := s.readAt(ctx, op, func(rev, syncRev int64) error {
		out, at = nil, syncRev
		parents := records.UniqueStrings(parentIDs)
		for _, parent := range parents {
			p := s.keys.byParent(parent)
			err := s.scan(ctx, op, p, prefixEnd(p), rev, false, 0, func(kv *mvccpb.KeyValue) (bool, error) {
				e, err := decodeEntry(kv)
				out = append(out, e)
				return err == nil, err
			})
			if err != nil {
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
	return out, at, nil
}

// CountEntries returns the number of entries.
func (s *Store) CountEntries(ctx context.Context) (int, error) {
	p := s.keys.under(prefixEntries)
	resp, err := s.get(ctx, "count entries", p, clientv3.WithRange(prefixEnd(p)), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}
