package storetest

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var changeTests = []suiteTest{
	{"ChangesSinceReportCurrentStateAndDeletions", testChangesSince},
	{"ChangesSinceTheCurrentRevisionAreEmpty", testChangesSinceNow},
	{"PrunedTombstonesMakeOlderRevisionsCompacted", testChangesCompacted},
	{"NegativeRevisionIsInvalidArgument", testChangesNegativeRevision},
}

// changesSince calls EntryChangesSince and sorts its answer by id.
func changesSince(t *testing.T, s store.Store, rev int64) (changed []*typesv1.Entry, deleted []string, at int64) {
	t.Helper()
	changed, deleted, at, err := s.EntryChangesSince(t.Context(), rev)
	if err != nil {
		t.Fatalf("EntryChangesSince(%d): %v", rev, err)
	}
	slices.SortFunc(changed, byID)
	slices.Sort(deleted)
	return changed, deleted, at
}

func testChangesSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	es := createEntries(t, s,
		newEntry("spiffe://example.org/kept", "spiffe://example.org/p1"),
		newEntry("spiffe://example.org/updated", "spiffe://example.org/p1"),
		newEntry("spiffe://example.org/deleted", "spiffe://example.org/p2"),
	)
	kept, toUpdate, toDelete := es[0], es[1], es[2]
	since := revision(t, s)

	upd := proto.Clone(toUpdate).(*typesv1.Entry)
	upd.ParentId = "spiffe://example.org/p9"
	updated, err := s.UpdateEntry(ctx, upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if _, err := s.DeleteEntry(ctx, toDelete.Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	added := createEntry(t, s, newEntry("spiffe://example.org/added", "spiffe://example.org/p3"))
	shortLived := createEntry(t, s, newEntry("spiffe://example.org/short", "spiffe://example.org/p3"))
	if _, err := s.DeleteEntry(ctx, shortLived.Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}

	tests := []struct {
		name        string
		since       int64
		wantChanged []*typesv1.Entry
		wantDeleted []*typesv1.Entry
	}{
		{"after the first writes", since, []*typesv1.Entry{updated, added}, []*typesv1.Entry{toDelete, shortLived}},
		{"from the beginning", 0, []*typesv1.Entry{kept, updated, added}, []*typesv1.Entry{toDelete, shortLived}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed, deleted, at := changesSince(t, s, tc.since)
			want := slices.Clone(tc.wantChanged)
			slices.SortFunc(want, byID)
			if diff := protoDiff(want, changed); diff != "" {
				t.Errorf("changed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(sortedIDs(tc.wantDeleted...), deleted); diff != "" {
				t.Errorf("deleted (-want +got):\n%s", diff)
			}
			if cur := revision(t, s); at != cur {
				t.Errorf("read at revision %d, current revision is %d", at, cur)
			}
		})
	}
}

func testChangesSinceNow(t *testing.T, s store.Store) {
	createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...)
	now := revision(t, s)
	changed, deleted, at := changesSince(t, s, now)
	if len(changed)+len(deleted) != 0 {
		t.Errorf("changes since the current revision: %v, %v", entryIDs(changed), deleted)
	}
	if at != now {
		t.Errorf("read at revision %d, want %d", at, now)
	}
}

func testChangesCompacted(t *testing.T, s store.Store) {
	ctx := t.Context()
	es := createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...)
	old := revision(t, s)
	if _, err := s.DeleteEntry(ctx, es[0].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if _, err := s.DeleteEntry(ctx, es[1].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	now := revision(t, s)
	if err := s.PruneTombstones(ctx, now+1); err != nil {
		t.Fatalf("PruneTombstones: %v", err)
	}
	_, _, _, err := s.EntryChangesSince(ctx, old)
	wantErrIs(t, err, store.ErrCompacted, "EntryChangesSince before pruned tombstones")

	// Nothing after the current revision was pruned, so resuming from it
	// still works, and later deletions are reported.
	changed, deleted, _ := changesSince(t, s, now)
	if len(changed)+len(deleted) != 0 {
		t.Errorf("changes since %d: %v, %v; want none", now, entryIDs(changed), deleted)
	}
	if _, err := s.DeleteEntry(ctx, es[2].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	_, deleted, _ = changesSince(t, s, now)
	if diff := cmp.Diff([]string{es[2].Id}, deleted, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("deleted after pruning (-want +got):\n%s", diff)
	}
}

func testChangesNegativeRevision(t *testing.T, s store.Store) {
	createEntries(t, s, manyEntries(2, "spiffe://example.org/agent")...)
	before := revision(t, s)
	_, _, _, err := s.EntryChangesSince(t.Context(), -1)
	wantErrIs(t, err, store.ErrInvalidArgument, "EntryChangesSince(-1)")
	wantErrIs(t, s.PruneTombstones(t.Context(), -1), store.ErrInvalidArgument, "PruneTombstones(-1)")
	if rev := revision(t, s); rev != before {
		t.Errorf("refused calls moved the revision from %d to %d", before, rev)
	}
}
