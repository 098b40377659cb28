package storetest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var entryTests = []suiteTest{
	{"CreateAssignsUUIDWhenIDIsEmptyAndKeepsAGivenID", testCreateAssignsIDs},
	{"CreateSetsCreatedAtOnlyWhenZero", testCreateSetsCreatedAt},
	{"CreateStoresEveryField", testCreateStoresEveryField},
	{"EveryWriteTakesTheNextRevision", testRevisions},
	{"DuplicatesAreRejected", testDuplicates},
	{"DuplicatesWithinOneBatchAreRejected", testDuplicatesWithinBatch},
	{"BatchCommitsTheGoodItemsAndReportsTheBadOnes", testBatchPartialFailure},
	{"UpdateReplacesTheEntry", testUpdateReplaces},
	{"UpdateWithStaleRevisionConflicts", testUpdateConflict},
	{"UpdateOfUnknownEntryIsNotFound", testUpdateNotFound},
	{"UpdateFollowsTheDuplicateRule", testUpdateDuplicate},
	{"UpdateMovesTheIndexes", testUpdateMovesIndexes},
	{"DeleteReturnsTheEntryThenNotFound", testDelete},
}

func testCreateAssignsIDs(t *testing.T, s store.Store) {
	given := newEntry("spiffe://example.org/b", "spiffe://example.org/agent")
	given.Id = "given-id"
	created := createEntries(t, s, newEntry("spiffe://example.org/a", "spiffe://example.org/agent"), given)
	if _, err := uuid.Parse(created[0].Id); err != nil {
		t.Errorf("assigned id %q is not a UUID: %v", created[0].Id, err)
	}
	if created[1].Id != "given-id" {
		t.Errorf("given id became %q, want %q", created[1].Id, "given-id")
	}
	for _, c := range created {
		if diff := protoDiff(c, getEntry(t, s, c.Id)); diff != "" {
			t.Errorf("GetEntry(%q) differs from the created copy (-created +got):\n%s", c.Id, diff)
		}
	}
}

func testCreateSetsCreatedAt(t *testing.T, s store.Store) {
	given := newEntry("spiffe://example.org/b", "spiffe://example.org/agent")
	given.CreatedAt = 1234567890
	created := createEntries(t, s, newEntry("spiffe://example.org/a", "spiffe://example.org/agent"), given)
	if created[0].CreatedAt <= 0 {
		t.Errorf("CreatedAt = %d, want it set", created[0].CreatedAt)
	}
	if created[1].CreatedAt != 1234567890 {
		t.Errorf("given CreatedAt became %d, want 1234567890", created[1].CreatedAt)
	}
}

func testCreateStoresEveryField(t *testing.T, s store.Store) {
	in := &typesv1.Entry{
		Id:           "full",
		SpiffeId:     "spiffe://example.org/full",
		ParentId:     "spiffe://example.org/agent",
		Selectors:    []string{"unix:uid:1000", "unix:gid:1000"},
		Purpose:      "answers support tickets",
		Owner:        "alice@example.org",
		ScopeCeiling: []string{"tickets:read", "tickets:write"},
		X509Ttl:      600,
		JwtTtl:       120,
		DnsNames:     []string{"full.example.org"},
		Hint:         "support",
		Admin:        true,
		ExpiresAt:    4102444800,
		CreatedAt:    1700000000,
	}
	got := createEntry(t, s, in)
	want := proto.Clone(in).(*typesv1.Entry)
	want.Revision = got.Revision
	if diff := protoDiff(want, got); diff != "" {
		t.Errorf("created entry (-want +got):\n%s", diff)
	}
	if diff := protoDiff(want, getEntry(t, s, "full")); diff != "" {
		t.Errorf("stored entry (-want +got):\n%s", diff)
	}
}

// revisionStep is one write of testRevisions; it returns the revision the
// write reports, or 0 for writes that report none (deletes, bundles).
type revisionStep struct {
	name  string
	write func(t *testing.T, s store.Store, e *typesv1.Entry) int64
}

var revisionSteps = []revisionStep{
	{"update entry", func(t *testing.T, s store.Store, e *typesv1.Entry) int64 {
		upd := proto.Clone(e).(*typesv1.Entry)
		upd.Purpose = "changed"
		got, err := s.UpdateEntry(t.Context(), upd)
		must(t, "UpdateEntry", err)
		return got.Revision
	}},
	{"delete entry", func(t *testing.T, s store.Store, e *typesv1.Entry) int64 {
		_, err := s.DeleteEntry(t.Context(), e.Id)
		must(t, "DeleteEntry", err)
		return 0
	}},
	{"create node", func(t *testing.T, s store.Store, _ *typesv1.Entry) int64 {
		return createNode(t, s, newNode("spiffe://example.org/agent")).Revision
	}},
	{"update node", func(t *testing.T, s store.Store, _ *typesv1.Entry) int64 {
		n, err := s.UpdateNode(t.Context(), "spiffe://example.org/agent", func(n *typesv1.Node) error { n.LastSeenAt = 1; return nil })
		must(t, "UpdateNode", err)
		return n.Revision
	}},
	{"delete node", func(t *testing.T, s store.Store, _ *typesv1.Entry) int64 {
		must(t, "DeleteNode", s.DeleteNode(t.Context(), "spiffe://example.org/agent"))
		return 0
	}},
	{"update bundle", func(t *testing.T, s store.Store, _ *typesv1.Entry) int64 {
		_, err := s.UpdateBundle(t.Context(), "example.org", func(*typesv1.Bundle) error { return nil })
		must(t, "UpdateBundle", err)
		return 0
	}},
}

func testRevisions(t *testing.T, s store.Store) {
	last := revision(t, s)
	e := createEntry(t, s, newEntry("spiffe://example.org/a", "spiffe://example.org/agent"))
	if e.Revision <= last || e.Revision != revision(t, s) || getEntry(t, s, e.Id).Revision != e.Revision {
		t.Fatalf("create took revision %d (before %d), store reports %d", e.Revision, last, revision(t, s))
	}
	last = e.Revision
	for i, b := range createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...) {
		if b.Revision <= last {
			t.Fatalf("batch item %d took revision %d, want more than %d", i, b.Revision, last)
		}
		last = b.Revision
	}
	if got := revision(t, s); got != last {
		t.Fatalf("after a batch Revision() = %d, want its last item's %d", got, last)
	}
	for _, step := range revisionSteps {
		reported := step.write(t, s, e)
		now := revision(t, s)
		if now <= last || (reported != 0 && reported != now) {
			t.Fatalf("%s: reported revision %d, Revision() %d, previous %d; want one new revision, reported", step.name, reported, now, last)
		}
		last = now
	}
}

func testDuplicates(t *testing.T, s store.Store) {
	base := newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1000", "unix:gid:1000")
	base.Id = "base"
	createEntry(t, s, base)
	tests := []struct {
		name    string
		entry   *typesv1.Entry
		wantDup bool
	}{
		{"same selectors in the same order", newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1000", "unix:gid:1000"), true},
		{"same selectors in another order", newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:gid:1000", "unix:uid:1000"), true},
		{"same id", &typesv1.Entry{Id: "base", SpiffeId: "spiffe://example.org/other", ParentId: "spiffe://example.org/agent"}, true},
		{"a subset of the selectors", newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1000"), false},
		{"another parent", newEntry("spiffe://example.org/w", "spiffe://example.org/agent2", "unix:uid:1000", "unix:gid:1000"), false},
		{"another SPIFFE ID", newEntry("spiffe://example.org/w2", "spiffe://example.org/agent", "unix:uid:1000", "unix:gid:1000"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			created, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{tc.entry})
			if err != nil {
				t.Fatalf("CreateEntries: %v", err)
			}
			if !tc.wantDup {
				if errs[0] != nil || created[0] == nil {
					t.Fatalf("CreateEntries: got (%v, %v), want the entry stored", created[0], errs[0])
				}
				return
			}
			wantErrIs(t, errs[0], store.ErrAlreadyExists, "CreateEntries of a duplicate")
			if created[0] != nil {
				t.Errorf("a rejected duplicate came back as stored: %v", created[0])
			}
		})
	}
	if diff := protoDiff(base, getEntry(t, s, "base"), protocmp.IgnoreFields(base, "revision", "created_at")); diff != "" {
		t.Errorf("the original entry changed (-want +got):\n%s", diff)
	}
}

func testDuplicatesWithinBatch(t *testing.T, s store.Store) {
	a := newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "k8s:ns:a", "k8s:sa:b")
	b := newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "k8s:sa:b", "k8s:ns:a")
	c := newEntry("spiffe://example.org/c", "spiffe://example.org/agent")
	c.Id = "same"
	d := newEntry("spiffe://example.org/d", "spiffe://example.org/agent")
	d.Id = "same"
	created, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{a, b, c, d})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("first occurrences failed: %v, %v", errs[0], errs[2])
	}
	wantErrIs(t, errs[1], store.ErrAlreadyExists, "second entry with the same selector set")
	wantErrIs(t, errs[3], store.ErrAlreadyExists, "second entry with the same id")
	if created[1] != nil || created[3] != nil {
		t.Errorf("rejected items came back as stored: %v, %v", created[1], created[3])
	}
	if got := getEntry(t, s, "same"); got.SpiffeId != "spiffe://example.org/c" {
		t.Errorf("entry %q has spiffe_id %q, want the first occurrence's", "same", got.SpiffeId)
	}
	if n, err := s.CountEntries(t.Context()); err != nil || n != 2 {
		t.Errorf("CountEntries = %d, %v; want 2", n, err)
	}
}

func testBatchPartialFailure(t *testing.T, s store.Store) {
	existing := createEntry(t, s, newEntry("spiffe://example.org/x", "spiffe://example.org/agent", "unix:uid:1"))
	batch := []*typesv1.Entry{
		newEntry("spiffe://example.org/good1", "spiffe://example.org/agent"),
		newEntry("spiffe://example.org/x", "spiffe://example.org/agent", "unix:uid:1"),
		newEntry("spiffe://example.org/good2", "spiffe://example.org/agent"),
	}
	created, errs, err := s.CreateEntries(t.Context(), batch)
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("good items failed: %v, %v", errs[0], errs[2])
	}
	wantErrIs(t, errs[1], store.ErrAlreadyExists, "duplicate item")
	if created[1] != nil {
		t.Errorf("failed item came back as stored: %v", created[1])
	}
	for _, i := range []int{0, 2} {
		if diff := protoDiff(created[i], getEntry(t, s, created[i].Id)); diff != "" {
			t.Errorf("item %d (-created +stored):\n%s", i, diff)
		}
	}
	list, _, err := s.ListEntries(t.Context(), store.ListEntriesRequest{})
	if err != nil {
		t.Fatalf("ListEntries: %v", err)
	}
	if diff := cmp.Diff(sortedIDs(existing, created[0], created[2]), entryIDs(list)); diff != "" {
		t.Errorf("stored ids (-want +got):\n%s", diff)
	}
}
