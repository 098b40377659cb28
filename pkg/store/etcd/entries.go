package etcd

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// CreateEntries stores entries in one transaction; see store.EntryStore.
// The transaction compares every id and duplicate key it claims (absent)
// and every one it refuses an item for (unchanged), so the outcome is
// exactly what a serial execution would give. When another server won a
// key meanwhile, the failed transaction's reads say which, and the batch
// is planned again.
func (s *Store) CreateEntries(ctx context.Context, entries []*typesv1.Entry) ([]*typesv1.Entry, []error, error) {
	const op = "create entries"
	if len(entries) > maxSub+1 {
		return nil, nil, fmt.Errorf("%s: %d entries, at most %d per call: %w", op, len(entries), maxSub+1, store.ErrInvalidArgument)
	}
	for i, e := range entries {
		if e == nil {
			return nil, nil, fmt.Errorf("%s: entries[%d] is nil: %w", op, i, store.ErrInvalidArgument)
		}
	}
	if err := s.check(ctx, op); err != nil {
		return nil, nil, err
	}
	b := s.newBatch(entries)
	err := s.retry(ctx, op, func() (bool, error) {
		plan, err := b.plan()
		if err != nil || len(plan.then) == 0 {
			return true, err
		}
		resp, err := s.txn(ctx, op, plan.cmps, plan.then, plan.els)
		if err != nil {
			return false, err
		}
		if !resp.Succeeded {
			b.learn(resp)
			return false, nil
		}
		b.commit(resp.Header.Revision)
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if b.created == nil {
		// Every item was refused, by the reads of the last attempt.
		b.created = make([]*typesv1.Entry, len(entries))
	}
	return b.created, b.errs, nil
}

// newEntryID returns a UUIDv7: random enough to be unguessable and unique
// across servers, and time-ordered so that listings by id follow creation.
func newEntryID() string { return uuid.Must(uuid.NewV7()).String() }

// batch is one CreateEntries call being planned against what etcd holds.
type batch struct {
	s       *Store
	entries []*typesv1.Entry // the stored copies, ids and created_at set
	dups    []string         // duplicate key of each entry
	// taken holds the keys the last failed attempt found in etcd.
	taken   map[string]*mvccpb.KeyValue
	errs    []error
	created []*typesv1.Entry
	subs    []int64 // sub of each stored entry, -1 if refused
}

func (s *Store) newBatch(in []*typesv1.Entry) *batch {
	now := s.clock.Now().Unix()
	b := &batch{s: s, entries: make([]*typesv1.Entry, len(in)), dups: make([]string, len(in))}
	for i, e := range in {
		e = proto.Clone(e).(*typesv1.Entry)
		if e.Id == "" {
			e.Id = newEntryID()
		}
		if e.CreatedAt == 0 {
			e.CreatedAt = now
		}
		b.entries[i] = e
		b.dups[i] = s.keys.dup(e.SpiffeId, e.ParentId, e.Selectors)
	}
	return b
}

func dupError(dupOf string, e *typesv1.Entry) error {
	return fmt.Errorf("entry %q has the same spiffe_id %q, parent_id %q and selectors: %w",
		dupOf, e.SpiffeId, e.ParentId, store.ErrAlreadyExists)
}

// txnPlan is one attempt's transaction.
type txnPlan struct {
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

// plan decides every item, in input order, against the earlier items it
// stores and what the last attempt saw in etcd, and builds the
// transaction that commits the decision if it still holds.
func (b *batch) plan() (txnPlan, error) {
	var p txnPlan
	b.errs = make([]error, len(b.entries))
	b.subs = make([]int64, len(b.entries))
	ids := make(map[string]bool, len(b.entries))
	dups := make(map[string]string, len(b.entries))
	sub := int64(0)
	for i, e := range b.entries {
		b.subs[i] = -1
		ek, dk := b.s.keys.entry(e.Id), b.dups[i]
		if b.errs[i] = b.refusal(e, ek, dk, ids, dups, &p); b.errs[i] != nil {
			continue
		}
		ids[e.Id], dups[dk] = true, e.Id
		p.cmps = append(p.cmps,
			clientv3.Compare(clientv3.CreateRevision(ek), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
		ops, err := b.s.entryPuts(e, sub, nil)
		if err != nil {
			return p, err
		}
		p.then = append(p.then, ops...)
		b.subs[i] = sub
		sub++
	}
	if sub > 0 {
		p.then = append(p.then, b.s.putMarker(sub-1))
	}
	return p, nil
}

// refusal says why e cannot be stored, if it cannot: its id or duplicate
// key is claimed by an earlier item of the batch, or was found in etcd by
// the last attempt (then the plan compares the key is still as seen).
// Every item not refused by the batch itself reads both keys in the
// transaction's failure branch, so that a failed attempt tells the next.
func (b *batch) refusal(e *typesv1.Entry, ek, dk string, ids map[string]bool, dups map[string]string, p *txnPlan) error {
	if ids[e.Id] {
		return fmt.Errorf("entry id %q: %w", e.Id, store.ErrAlreadyExists)
	}
	if id, ok := dups[dk]; ok {
		return dupError(id, e)
	}
	p.els = append(p.els, clientv3.OpGet(ek), clientv3.OpGet(dk))
	if kv := b.taken[ek]; kv != nil {
		p.cmps = append(p.cmps, clientv3.Compare(clientv3.ModRevision(ek), "=", kv.ModRevision))
		return fmt.Errorf("entry id %q: %w", e.Id, store.ErrAlreadyExists)
	}
	if kv := b.taken[dk]; kv != nil {
		p.cmps = append(p.cmps, clientv3.Compare(clientv3.ModRevision(dk), "=", kv.ModRevision))
		return dupError(string(kv.Value), e)
	}
	return nil
}

// learn records the keys a failed attempt found.
func (b *batch) learn(resp *clientv3.TxnResponse) {
	b.taken = make(map[string]*mvccpb.KeyValue)
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			b.taken[string(kv.Key)] = kv
		}
	}
}

// commit fills in the stored copies once the transaction at modRevision
// has succeeded.
func (b *batch) commit(modRevision int64) {
	b.created = make([]*typesv1.Entry, len(b.entries))
	for i, e := range b.entries {
		if b.subs[i] >= 0 {
			e.Revision = syncRevision(modRevision, b.subs[i])
			b.created[i] = e
		}
	}
}

// UpdateEntry replaces the entry with e.Id; see store.EntryStore. It reads
// the entry and the new duplicate key, and commits only if the entry is
// unchanged since and the key still free, else reads again.
func (s *Store) UpdateEntry(ctx context.Context, e *typesv1.Entry) (*typesv1.Entry, error) {
	const op = "update entry"
	if e == nil {
		return nil, fmt.Errorf("%s: entry is nil: %w", op, store.ErrInvalidArgument)
	}
	var out *typesv1.Entry
	err := s.retry(ctx, op, func() (bool, error) {
		next := proto.Clone(e).(*typesv1.Entry)
		plan, err := s.planUpdate(ctx, op, next)
		if err != nil {
			return false, err
		}
		resp, err := s.txn(ctx, op, plan.cmps, plan.then, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		next.Revision = syncRevision(resp.Header.Revision, 0)
		out = next
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// planUpdate checks next against the stored entry and builds the
// transaction that replaces it.
func (s *Store) planUpdate(ctx context.Context, op string, next *typesv1.Entry) (txnPlan, error) {
	ek := s.keys.entry(next.Id)
	dk := s.keys.dup(next.SpiffeId, next.ParentId, next.Selectors)
	read, _, err := s.getMany(ctx, op, []string{ek, dk}, 0)
	if err != nil {
		return txnPlan{}, err
	}
	prevKV := read[ek]
	if prevKV == nil || next.Id == "" {
		return txnPlan{}, fmt.Errorf("%s: entry %q: %w", op, next.Id, store.ErrNotFound)
	}
	prev, err := decodeEntry(prevKV)
	if err != nil {
		return txnPlan{}, fmt.Errorf("%s: %w", op, err)
	}
	if next.Revision != 0 && next.Revision != prev.Revision {
		return txnPlan{}, fmt.Errorf("%s: entry %q: revision %d is not the stored revision %d: %w",
			op, next.Id, next.Revision, prev.Revision, store.ErrConflict)
	}
	if kv := read[dk]; kv != nil && string(kv.Value) != next.Id {
		return txnPlan{}, fmt.Errorf("%s: %w", op, dupError(string(kv.Value), next))
	}
	// CreatedAt belongs to the server: an update can neither forge nor lose it.
	next.CreatedAt = prev.CreatedAt
	ops, err := s.replaceOps(prev, next)
	if err != nil {
		return txnPlan{}, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ek), "=", prevKV.ModRevision)}
	if read[dk] == nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
	}
	return txnPlan{cmps: cmps, then: append(ops, s.putMarker(0))}, nil
}

// DeleteEntry removes an entry and leaves a tombstone; see store.EntryStore.
func (s *Store) DeleteEntry(ctx context.Context, id string) (*typesv1.Entry, error) {
	const op = "delete entry"
	var out *typesv1.Entry
	err := s.retry(ctx, op, func() (bool, error) {
		prev, kv, err := s.loadEntry(ctx, op, id)
		if err != nil {
			return false, err
		}
		ops := append(s.entryDeletes(prev, nil), clientv3.OpPut(s.keys.tombstone(id), ""), s.putMarker(0))
		resp, err := s.txn(ctx, op, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)}, ops, nil)
		if err != nil || !resp.Succeeded {
			return false, err
		}
		out = prev
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetEntry returns the entry with id, or an error wrapping store.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (*typesv1.Entry, error) {
	e, _, err := s.loadEntry(ctx, "get entry", id)
	return e, err
}
