package storetest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func testUpdateReplaces(t *testing.T, s store.Store) {
	orig := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1"))
	next := &typesv1.Entry{
		Id:           orig.Id,
		SpiffeId:     "spiffe://example.org/w2",
		ParentId:     "spiffe://example.org/agent2",
		Selectors:    []string{"unix:uid:2"},
		Purpose:      "new purpose",
		Owner:        "bob@example.org",
		ScopeCeiling: []string{"a:b"},
		Revision:     orig.Revision,
	}
	got, err := s.UpdateEntry(t.Context(), next)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if got.Revision <= orig.Revision {
		t.Errorf("updated revision %d, want more than %d", got.Revision, orig.Revision)
	}
	// What the store keeps beyond the caller's fields (revision, created_at)
	// is the store's; the rest must be exactly what was asked for.
	opt := protocmp.IgnoreFields(next, "revision", "created_at")
	if diff := protoDiff(next, got, opt); diff != "" {
		t.Errorf("UpdateEntry result (-want +got):\n%s", diff)
	}
	if diff := protoDiff(got, getEntry(t, s, orig.Id)); diff != "" {
		t.Errorf("stored entry differs from the update's result (-result +stored):\n%s", diff)
	}
}

func testUpdateConflict(t *testing.T, s store.Store) {
	orig := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent"))
	first := proto.Clone(orig).(*typesv1.Entry)
	first.Purpose = "first writer"
	stored, err := s.UpdateEntry(t.Context(), first)
	if err != nil {
		t.Fatalf("first UpdateEntry: %v", err)
	}
	stale := proto.Clone(orig).(*typesv1.Entry)
	stale.Purpose = "second writer with a stale revision"
	_, err = s.UpdateEntry(t.Context(), stale)
	wantErrIs(t, err, store.ErrConflict, "UpdateEntry with a stale revision")
	if diff := protoDiff(stored, getEntry(t, s, orig.Id)); diff != "" {
		t.Errorf("a conflicting update changed the entry (-want +got):\n%s", diff)
	}

	blind := proto.Clone(orig).(*typesv1.Entry)
	blind.Revision = 0
	blind.Purpose = "unconditional"
	got, err := s.UpdateEntry(t.Context(), blind)
	if err != nil {
		t.Fatalf("UpdateEntry with revision 0: %v", err)
	}
	if got.Purpose != "unconditional" {
		t.Errorf("purpose = %q after an unconditional update", got.Purpose)
	}
}

func testUpdateNotFound(t *testing.T, s store.Store) {
	before := revision(t, s)
	_, err := s.UpdateEntry(t.Context(), newEntry("spiffe://example.org/w", "spiffe://example.org/agent"))
	wantErrIs(t, err, store.ErrNotFound, "UpdateEntry of an entry without id")
	e := newEntry("spiffe://example.org/w", "spiffe://example.org/agent")
	e.Id = "missing"
	_, err = s.UpdateEntry(t.Context(), e)
	wantErrIs(t, err, store.ErrNotFound, "UpdateEntry of an unknown id")
	if after := revision(t, s); after != before {
		t.Errorf("failed updates moved the revision from %d to %d", before, after)
	}
	if _, err := s.GetEntry(t.Context(), "missing"); err == nil {
		t.Error("a failed update created the entry")
	}
}

func testUpdateDuplicate(t *testing.T, s store.Store) {
	a := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1", "unix:gid:1"))
	b := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:2"))

	clash := proto.Clone(b).(*typesv1.Entry)
	clash.Selectors = []string{"unix:gid:1", "unix:uid:1"}
	_, err := s.UpdateEntry(t.Context(), clash)
	wantErrIs(t, err, store.ErrAlreadyExists, "UpdateEntry onto another entry's selector set")
	if diff := protoDiff(b, getEntry(t, s, b.Id)); diff != "" {
		t.Errorf("a rejected update changed the entry (-want +got):\n%s", diff)
	}

	// An entry is never a duplicate of itself: reordering its own selectors
	// or changing other fields is fine.
	self := proto.Clone(a).(*typesv1.Entry)
	self.Selectors = []string{"unix:gid:1", "unix:uid:1"}
	self.Purpose = "same key, new purpose"
	if _, err := s.UpdateEntry(t.Context(), self); err != nil {
		t.Fatalf("UpdateEntry keeping its own key: %v", err)
	}
}

func testUpdateMovesIndexes(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := createEntry(t, s, newEntry("spiffe://example.org/old", "spiffe://example.org/p1", "unix:uid:1"))
	next := proto.Clone(orig).(*typesv1.Entry)
	next.SpiffeId, next.ParentId, next.Selectors = "spiffe://example.org/new", "spiffe://example.org/p2", []string{"unix:uid:2"}
	if _, err := s.UpdateEntry(ctx, next); err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	tests := []struct {
		name string
		req  store.ListEntriesRequest
		want []string
	}{
		{"old parent", store.ListEntriesRequest{ParentID: "spiffe://example.org/p1"}, nil},
		{"new parent", store.ListEntriesRequest{ParentID: "spiffe://example.org/p2"}, []string{orig.Id}},
		{"old selector", store.ListEntriesRequest{Selectors: []string{"unix:uid:1"}}, nil},
		{"new selector", store.ListEntriesRequest{Selectors: []string{"unix:uid:2"}}, []string{orig.Id}},
		{"old SPIFFE ID", store.ListEntriesRequest{SpiffeID: "spiffe://example.org/old"}, nil},
		{"new SPIFFE ID", store.ListEntriesRequest{SpiffeID: "spiffe://example.org/new"}, []string{orig.Id}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := s.ListEntries(ctx, tc.req)
			if err != nil {
				t.Fatalf("ListEntries: %v", err)
			}
			if diff := cmp.Diff(tc.want, entryIDs(got), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
	byParent, _, err := s.ListEntriesByParent(ctx, []string{"spiffe://example.org/p1"})
	if err != nil || len(byParent) != 0 {
		t.Errorf("ListEntriesByParent(old parent) = %v, %v; want nothing", entryIDs(byParent), err)
	}
	// The old key is free again.
	createEntry(t, s, newEntry("spiffe://example.org/old", "spiffe://example.org/p1", "unix:uid:1"))
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1"))
	before := revision(t, s)
	got, err := s.DeleteEntry(ctx, e.Id)
	if err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if diff := protoDiff(e, got); diff != "" {
		t.Errorf("DeleteEntry returned (-want +got):\n%s", diff)
	}
	if after := revision(t, s); after <= before {
		t.Errorf("delete left the revision at %d, want more than %d", after, before)
	}
	_, err = s.GetEntry(ctx, e.Id)
	wantErrIs(t, err, store.ErrNotFound, "GetEntry after delete")
	_, err = s.DeleteEntry(ctx, e.Id)
	wantErrIs(t, err, store.ErrNotFound, "second DeleteEntry")
	for _, req := range []store.ListEntriesRequest{{}, {ParentID: e.ParentId}, {Selectors: e.Selectors}, {SpiffeID: e.SpiffeId}} {
		if list, _, err := s.ListEntries(ctx, req); err != nil || len(list) != 0 {
			t.Errorf("ListEntries(%+v) after delete = %v, %v; want nothing", req, entryIDs(list), err)
		}
	}
	// The duplicate key is free again.
	createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1"))
}
