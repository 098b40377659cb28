package storetest

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var grantTests = []suiteTest{
	{"CreateStoresTheGrantOnce", testCreateGrant},
	{"CreateRefusesGrantsWithoutIDOrSPIFFEID", testCreateGrantInvalid},
	{"CreateFillsCreatedAt", testCreateGrantCreatedAt},
	{"GrantsDoNotMoveTheGlobalRevision", testGrantRevision},
	{"UpdateAppliesFn", testUpdateGrant},
	{"UpdateFnErrorChangesNothing", testUpdateGrantFnError},
	{"UpdateMayNotChangeWhatTheGrantIsIndexedBy", testUpdateGrantIdentity},
	{"UpdateOfUnknownGrantIsNotFound", testUpdateGrantNotFound},
	{"MutatingGrantsPassedInOrReturnedChangesNothingStored", testGrantIsolation},
}

// Fixed times of the grant tests, in unix seconds.
const (
	grantT0    = int64(1_800_000_000)
	grantAgent = "spiffe://example.org/nhid/agent/join_token/abc"
)

// newGrant builds an ACTIVE grant as pkg/grant would store it.
func newGrant(id, spiffeID, entryID string, createdAt int64) *typesv1.Grant {
	return &typesv1.Grant{
		Id:              id,
		SpiffeId:        spiffeID,
		EntryId:         entryID,
		Node:            grantAgent,
		Purpose:         "conformance test",
		Owner:           "owner@example.org",
		RequestedScopes: []string{"repo:read", "repo:write"},
		Scopes:          []string{"repo:read"},
		Resource:        "repo/nhid",
		Action:          "clone",
		Reason:          "build the release",
		RequestedTtl:    600,
		Status:          typesv1.GrantStatus_GRANT_STATUS_ACTIVE,
		Rule:            "allow-ci",
		CreatedAt:       createdAt,
		DecidedAt:       createdAt,
		ExpiresAt:       createdAt + 600,
	}
}

func createGrant(t *testing.T, s store.Store, g *typesv1.Grant) *typesv1.Grant {
	t.Helper()
	got, err := s.CreateGrant(t.Context(), g)
	if err != nil {
		t.Fatalf("CreateGrant(%q): %v", g.GetId(), err)
	}
	return got
}

func getGrant(t *testing.T, s store.Store, id string) *typesv1.Grant {
	t.Helper()
	g, err := s.GetGrant(t.Context(), id)
	if err != nil {
		t.Fatalf("GetGrant(%q): %v", id, err)
	}
	return g
}

func testCreateGrant(t *testing.T, s store.Store) {
	in := newGrant("g1", "spiffe://example.org/w", "e1", grantT0)
	got := createGrant(t, s, in)
	if got.Revision <= 0 {
		t.Errorf("grant revision %d, want positive", got.Revision)
	}
	if diff := protoDiff(in, got, protocmp.IgnoreFields(in, "revision")); diff != "" {
		t.Errorf("CreateGrant result (-want +got):\n%s", diff)
	}
	if diff := protoDiff(got, getGrant(t, s, "g1")); diff != "" {
		t.Errorf("stored grant (-created +stored):\n%s", diff)
	}
	again := newGrant("g1", "spiffe://example.org/other", "e2", grantT0+1)
	_, err := s.CreateGrant(t.Context(), again)
	wantErrIs(t, err, store.ErrAlreadyExists, "second CreateGrant with the same id")
	if diff := protoDiff(got, getGrant(t, s, "g1")); diff != "" {
		t.Errorf("a refused CreateGrant changed the grant (-want +got):\n%s", diff)
	}
	_, err = s.GetGrant(t.Context(), "none")
	wantErrIs(t, err, store.ErrNotFound, "GetGrant of an unknown grant")
}

func testCreateGrantInvalid(t *testing.T, s store.Store) {
	tests := []struct {
		name string
		g    *typesv1.Grant
	}{
		{"nil", nil},
		{"no id", newGrant("", "spiffe://example.org/w", "e1", grantT0)},
		{"no spiffe id", newGrant("g1", "", "e1", grantT0)},
		{"negative expiry", func() *typesv1.Grant {
			g := newGrant("g1", "spiffe://example.org/w", "e1", grantT0)
			g.ExpiresAt = -1
			return g
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateGrant(t.Context(), tc.g)
			wantErrIs(t, err, store.ErrInvalidArgument, "CreateGrant")
		})
	}
	all, _, err := s.ListGrants(t.Context(), store.ListGrantsRequest{})
	if err != nil || len(all) != 0 {
		t.Errorf("after refused creates ListGrants = %d grants, %v; want none", len(all), err)
	}
}

func testCreateGrantCreatedAt(t *testing.T, s store.Store) {
	got := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", 0))
	if got.CreatedAt <= 0 {
		t.Errorf("created_at = %d, want the store's now", got.CreatedAt)
	}
	if stored := getGrant(t, s, "g1"); stored.CreatedAt != got.CreatedAt {
		t.Errorf("stored created_at %d, returned %d", stored.CreatedAt, got.CreatedAt)
	}
}

func testGrantRevision(t *testing.T, s store.Store) {
	createEntry(t, s, newEntry("spiffe://example.org/w", grantAgent))
	before := revision(t, s)
	g1 := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	g2 := createGrant(t, s, newGrant("g2", "spiffe://example.org/w", "e1", grantT0))
	if g2.Revision <= g1.Revision {
		t.Errorf("grant revisions %d then %d, want increasing", g1.Revision, g2.Revision)
	}
	if after := revision(t, s); after != before {
		t.Errorf("creating grants moved the global revision from %d to %d", before, after)
	}
}

func testUpdateGrant(t *testing.T, s store.Store) {
	orig := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	got, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error {
		if g.Status != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
			return fmt.Errorf("fn got status %v, want the stored one", g.Status)
		}
		g.Status = typesv1.GrantStatus_GRANT_STATUS_REVOKED
		g.EndedAt, g.EndedBy, g.DecisionReason = grantT0+10, "operator", "leaked"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateGrant: %v", err)
	}
	want := proto.Clone(orig).(*typesv1.Grant)
	want.Status = typesv1.GrantStatus_GRANT_STATUS_REVOKED
	want.EndedAt, want.EndedBy, want.DecisionReason = grantT0+10, "operator", "leaked"
	if diff := protoDiff(want, got, protocmp.IgnoreFields(want, "revision")); diff != "" {
		t.Errorf("UpdateGrant result (-want +got):\n%s", diff)
	}
	if got.Revision <= orig.Revision {
		t.Errorf("revision after update %d, before %d; want it to grow", got.Revision, orig.Revision)
	}
	if diff := protoDiff(got, getGrant(t, s, "g1")); diff != "" {
		t.Errorf("stored grant (-result +stored):\n%s", diff)
	}
}

func testUpdateGrantFnError(t *testing.T, s store.Store) {
	orig := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	errRefused := errors.New("refused by fn")
	_, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error {
		g.Status = typesv1.GrantStatus_GRANT_STATUS_REVOKED
		return errRefused
	})
	wantErrIs(t, err, errRefused, "UpdateGrant whose fn fails")
	if diff := protoDiff(orig, getGrant(t, s, "g1")); diff != "" {
		t.Errorf("the grant changed (-want +got):\n%s", diff)
	}
	revoked := listGrantIDs(t, s, store.ListGrantsRequest{Status: typesv1.GrantStatus_GRANT_STATUS_REVOKED})
	if len(revoked) != 0 {
		t.Errorf("a failed update left status index rows: %v", revoked)
	}
}

func testUpdateGrantIdentity(t *testing.T, s store.Store) {
	orig := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	changes := map[string]func(*typesv1.Grant){
		"id":         func(g *typesv1.Grant) { g.Id = "g2" },
		"spiffe_id":  func(g *typesv1.Grant) { g.SpiffeId = "spiffe://example.org/x" },
		"entry_id":   func(g *typesv1.Grant) { g.EntryId = "e2" },
		"created_at": func(g *typesv1.Grant) { g.CreatedAt++ },
	}
	for field, change := range changes {
		t.Run(field, func(t *testing.T) {
			_, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error { change(g); return nil })
			wantErrIs(t, err, store.ErrInvalidArgument, "UpdateGrant changing "+field)
			if diff := protoDiff(orig, getGrant(t, s, "g1")); diff != "" {
				t.Errorf("the grant changed (-want +got):\n%s", diff)
			}
		})
	}
}

func testUpdateGrantNotFound(t *testing.T, s store.Store) {
	_, err := s.UpdateGrant(t.Context(), "none", func(*typesv1.Grant) error { return nil })
	wantErrIs(t, err, store.ErrNotFound, "UpdateGrant of an unknown grant")
	if _, err := s.GetGrant(t.Context(), "none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateGrant created the grant: GetGrant = %v", err)
	}
}

// mutateGrant scribbles over the fields a caller might touch, including
// the shared backing arrays of repeated fields.
func mutateGrant(g *typesv1.Grant) {
	g.SpiffeId, g.Reason, g.Status = "spiffe://evil/x", "evil", typesv1.GrantStatus_GRANT_STATUS_DENIED
	if len(g.Scopes) > 0 {
		g.Scopes[0] = "evil"
	}
	g.Scopes = append(g.Scopes, "evil2")
}

func testGrantIsolation(t *testing.T, s store.Store) {
	in := newGrant("g1", "spiffe://example.org/w", "e1", grantT0)
	created := createGrant(t, s, in)
	want := proto.Clone(created).(*typesv1.Grant)
	mutateGrant(in)
	mutateGrant(created)
	mutateGrant(getGrant(t, s, "g1"))
	list, _, err := s.ListGrants(t.Context(), store.ListGrantsRequest{})
	if err != nil {
		t.Fatalf("ListGrants: %v", err)
	}
	mutateGrant(list[0])
	var kept *typesv1.Grant
	updated, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error {
		g.Reason = "updated"
		kept = g
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateGrant: %v", err)
	}
	want = proto.Clone(updated).(*typesv1.Grant)
	mutateGrant(kept)
	mutateGrant(updated)
	if diff := protoDiff(want, getGrant(t, s, "g1")); diff != "" {
		t.Errorf("stored grant changed through a caller's copy (-want +got):\n%s", diff)
	}
}
