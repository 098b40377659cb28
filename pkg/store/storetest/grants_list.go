package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var grantListTests = []suiteTest{
	{"ListIsNewestFirstAndPages", testListGrantsPages},
	{"ListFiltersCombine", testListGrantsFilters},
	{"ListFollowsStatusChanges", testListGrantsStatusChange},
	{"ListRefusesBadPageArguments", testListGrantsBadPage},
	{"UsageCountsGrantsCreatedSince", testUsageCountsCreated},
	{"UsageCountsLiveActiveGrants", testUsageCountsActive},
	{"UsageReadsEveryCounterAtOnce", testGrantUsage},
	{"PruneDropsGrantsThatEndedOrExpired", testPruneGrants},
	{"WatchGrantsDeliversGrantChangesOnly", testWatchGrants},
}

func listGrantIDs(t *testing.T, s store.Store, req store.ListGrantsRequest) []string {
	t.Helper()
	grants, next, err := s.ListGrants(t.Context(), req)
	if err != nil {
		t.Fatalf("ListGrants(%+v): %v", req, err)
	}
	if next != "" {
		t.Fatalf("ListGrants(%+v) without a page size returned a page token", req)
	}
	var ids []string
	for _, g := range grants {
		ids = append(ids, g.Id)
	}
	return ids
}

// grantFixture is a set of stored grants over two SPIFFE IDs, three
// entries and three statuses, created at distinct times.
type grantFixture struct {
	grants []*typesv1.Grant // in creation order
}

func newGrantFixture(t *testing.T, s store.Store) *grantFixture {
	t.Helper()
	statuses := []typesv1.GrantStatus{
		typesv1.GrantStatus_GRANT_STATUS_ACTIVE,
		typesv1.GrantStatus_GRANT_STATUS_DENIED,
		typesv1.GrantStatus_GRANT_STATUS_PENDING,
	}
	f := &grantFixture{}
	for i := range 30 {
		g := newGrant(fmt.Sprintf("g%02d", i), fmt.Sprintf("spiffe://example.org/w%d", i%2), fmt.Sprintf("e%d", i%3), grantT0+int64(i/2))
		g.Status = statuses[(i/2)%3]
		f.grants = append(f.grants, createGrant(t, s, g))
	}
	return f
}

// want lists, newest first, the ids of the fixture's grants that keep says.
func (f *grantFixture) want(keep func(*typesv1.Grant) bool) []string {
	var ids []string
	for _, g := range f.grants {
		if keep(g) {
			ids = append(ids, g.Id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return -strings.Compare(a, b) })
	return ids
}

func testListGrantsPages(t *testing.T, s store.Store) {
	f := newGrantFixture(t, s)
	want := f.want(func(*typesv1.Grant) bool { return true })
	var got []string
	var sizes []int
	req := store.ListGrantsRequest{PageSize: 7}
	for range 100 {
		page, next, err := s.ListGrants(t.Context(), req)
		if err != nil {
			t.Fatalf("ListGrants: %v", err)
		}
		for _, g := range page {
			got = append(got, g.Id)
		}
		sizes = append(sizes, len(page))
		if next == "" {
			break
		}
		req.PageToken = next
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paged grant ids, newest first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{7, 7, 7, 7, 2}, sizes); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}
}

func testListGrantsFilters(t *testing.T, s store.Store) {
	f := newGrantFixture(t, s)
	active := typesv1.GrantStatus_GRANT_STATUS_ACTIVE
	tests := []struct {
		name string
		req  store.ListGrantsRequest
		keep func(*typesv1.Grant) bool
	}{
		{"spiffe id", store.ListGrantsRequest{SpiffeID: "spiffe://example.org/w1"},
			func(g *typesv1.Grant) bool { return g.SpiffeId == "spiffe://example.org/w1" }},
		{"status", store.ListGrantsRequest{Status: active},
			func(g *typesv1.Grant) bool { return g.Status == active }},
		{"one entry", store.ListGrantsRequest{EntryIDs: []string{"e2"}},
			func(g *typesv1.Grant) bool { return g.EntryId == "e2" }},
		{"two entries", store.ListGrantsRequest{EntryIDs: []string{"e2", "e0", "e2"}},
			func(g *typesv1.Grant) bool { return g.EntryId == "e2" || g.EntryId == "e0" }},
		{"spiffe id and status", store.ListGrantsRequest{SpiffeID: "spiffe://example.org/w0", Status: active},
			func(g *typesv1.Grant) bool { return g.SpiffeId == "spiffe://example.org/w0" && g.Status == active }},
		{"entries and status", store.ListGrantsRequest{EntryIDs: []string{"e1", "e0"}, Status: active},
			func(g *typesv1.Grant) bool { return (g.EntryId == "e1" || g.EntryId == "e0") && g.Status == active }},
		{"spiffe id and entry", store.ListGrantsRequest{SpiffeID: "spiffe://example.org/w1", EntryIDs: []string{"e1"}},
			func(g *typesv1.Grant) bool { return g.SpiffeId == "spiffe://example.org/w1" && g.EntryId == "e1" }},
		{"unknown spiffe id", store.ListGrantsRequest{SpiffeID: "spiffe://example.org/none"},
			func(*typesv1.Grant) bool { return false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := f.want(tc.keep)
			if diff := cmp.Diff(want, listGrantIDs(t, s, tc.req)); diff != "" {
				t.Errorf("ListGrants(%+v) (-want +got):\n%s", tc.req, diff)
			}
			paged := tc.req
			paged.PageSize = 2
			var got []string
			for range 100 {
				page, next, err := s.ListGrants(t.Context(), paged)
				if err != nil {
					t.Fatalf("ListGrants: %v", err)
				}
				for _, g := range page {
					got = append(got, g.Id)
				}
				if next == "" {
					break
				}
				paged.PageToken = next
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ListGrants(%+v) in pages of 2 (-want +got):\n%s", tc.req, diff)
			}
		})
	}
}

func testListGrantsStatusChange(t *testing.T, s store.Store) {
	createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	_, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error {
		g.Status = typesv1.GrantStatus_GRANT_STATUS_RELEASED
		g.EndedAt = grantT0 + 5
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateGrant: %v", err)
	}
	for _, req := range []store.ListGrantsRequest{
		{Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE},
		{SpiffeID: "spiffe://example.org/w", Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE},
	} {
		if got := listGrantIDs(t, s, req); len(got) != 0 {
			t.Errorf("ListGrants(%+v) after release = %v, want none", req, got)
		}
	}
	for _, req := range []store.ListGrantsRequest{
		{Status: typesv1.GrantStatus_GRANT_STATUS_RELEASED},
		{SpiffeID: "spiffe://example.org/w", Status: typesv1.GrantStatus_GRANT_STATUS_RELEASED},
	} {
		if diff := cmp.Diff([]string{"g1"}, listGrantIDs(t, s, req)); diff != "" {
			t.Errorf("ListGrants(%+v) after release (-want +got):\n%s", req, diff)
		}
	}
}

func testListGrantsBadPage(t *testing.T, s store.Store) {
	createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	for _, req := range []store.ListGrantsRequest{
		{PageSize: -1},
		{PageToken: "!!not base64!!"},
	} {
		_, _, err := s.ListGrants(t.Context(), req)
		wantErrIs(t, err, store.ErrInvalidArgument, fmt.Sprintf("ListGrants(%+v)", req))
	}
}

// usage reads spiffeID's usage counters at now (Unix seconds).
func usage(t *testing.T, s store.Store, spiffeID string, now int64) store.GrantUsage {
	t.Helper()
	u, err := s.GrantUsage(t.Context(), spiffeID, time.Unix(now, 0))
	if err != nil {
		t.Fatalf("GrantUsage(%s at %d): %v", spiffeID, now, err)
	}
	return u
}

func testUsageCountsCreated(t *testing.T, s store.Store) {
	for i := range 10 {
		createGrant(t, s, newGrant(fmt.Sprintf("a%d", i), "spiffe://example.org/a", "e1", grantT0+int64(i*10)))
		createGrant(t, s, newGrant(fmt.Sprintf("b%d", i), "spiffe://example.org/ab", "e2", grantT0+int64(i*10)))
	}
	tests := []struct {
		since int64
		want  int
	}{
		{0, 10},
		{grantT0, 10},
		{grantT0 + 1, 9},
		{grantT0 + 50, 5},
		{grantT0 + 90, 1},
		{grantT0 + 91, 0},
	}
	// A minute after since, last_minute counts the grants created at or
	// after since; all ten are within the day.
	for _, tc := range tests {
		u := usage(t, s, "spiffe://example.org/a", tc.since+60)
		if u.LastMinute != tc.want || u.LastDay != 10 {
			t.Errorf("usage a minute after %d = %+v; want last_minute %d, last_day 10", tc.since-grantT0, u, tc.want)
		}
	}
	if u := usage(t, s, "spiffe://example.org/none", grantT0); u != (store.GrantUsage{}) {
		t.Errorf("usage of an unknown SPIFFE ID = %+v; want zeros", u)
	}
}

func testUsageCountsActive(t *testing.T, s store.Store) {
	mk := func(id, spiffeID string, st typesv1.GrantStatus, expires int64) {
		g := newGrant(id, spiffeID, "e1", grantT0)
		g.Status, g.ExpiresAt = st, expires
		createGrant(t, s, g)
	}
	active := typesv1.GrantStatus_GRANT_STATUS_ACTIVE
	mk("a1", "spiffe://example.org/a", active, grantT0+100)
	mk("a2", "spiffe://example.org/a", active, grantT0+200)
	mk("a3", "spiffe://example.org/a", active, grantT0+300)
	mk("p1", "spiffe://example.org/a", typesv1.GrantStatus_GRANT_STATUS_PENDING, grantT0+300)
	mk("b1", "spiffe://example.org/ab", active, grantT0+300)
	count := func(at int64) int {
		t.Helper()
		return usage(t, s, "spiffe://example.org/a", at).Active
	}
	got := []int{count(grantT0), count(grantT0 + 99), count(grantT0 + 100), count(grantT0 + 250), count(grantT0 + 300)}
	if diff := cmp.Diff([]int{3, 3, 2, 1, 0}, got); diff != "" {
		t.Errorf("active counts at 0, 99, 100, 250, 300 s (-want +got):\n%s", diff)
	}
	_, err := s.UpdateGrant(t.Context(), "a3", func(g *typesv1.Grant) error {
		g.Status, g.EndedAt = typesv1.GrantStatus_GRANT_STATUS_REVOKED, grantT0+1
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(grantT0); n != 2 {
		t.Errorf("active count after a revocation = %d, want 2", n)
	}
	if n, err := s.PruneGrants(t.Context(), time.Unix(grantT0+150, 0)); err != nil || n != 2 {
		t.Fatalf("PruneGrants = %d, %v; want 2 (a1 expired, a3 ended)", n, err)
	}
	if n := count(grantT0); n != 1 {
		t.Errorf("active count after pruning = %d, want 1", n)
	}
}

func testPruneGrants(t *testing.T, s store.Store) {
	released := newGrant("released", "spiffe://example.org/w", "e1", grantT0)
	released.Status, released.EndedAt, released.ExpiresAt = typesv1.GrantStatus_GRANT_STATUS_RELEASED, grantT0+10, grantT0+1000
	expired := newGrant("expired", "spiffe://example.org/w", "e1", grantT0)
	expired.ExpiresAt = grantT0 + 50
	live := newGrant("live", "spiffe://example.org/w", "e1", grantT0)
	live.ExpiresAt = grantT0 + 1000
	open := newGrant("open", "spiffe://example.org/w", "e1", grantT0)
	open.ExpiresAt = 0
	for _, g := range []*typesv1.Grant{released, expired, live, open} {
		createGrant(t, s, g)
	}
	n, err := s.PruneGrants(t.Context(), time.Unix(grantT0+100, 0))
	if err != nil || n != 2 {
		t.Fatalf("PruneGrants = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"released", "expired"} {
		_, err := s.GetGrant(t.Context(), id)
		wantErrIs(t, err, store.ErrNotFound, "GetGrant of pruned grant "+id)
	}
	if diff := cmp.Diff([]string{"open", "live"}, listGrantIDs(t, s, store.ListGrantsRequest{EntryIDs: []string{"e1"}})); diff != "" {
		t.Errorf("grants left after pruning (-want +got):\n%s", diff)
	}
	if u := usage(t, s, "spiffe://example.org/w", grantT0+100); u.LastDay != 2 {
		t.Errorf("usage after pruning = %+v; want last_day 2", u)
	}
	if n, err := s.PruneGrants(t.Context(), time.Unix(grantT0+100, 0)); err != nil || n != 0 {
		t.Errorf("second PruneGrants = %d, %v; want 0", n, err)
	}
}

func testWatchGrants(t *testing.T, s store.Store) {
	grants, err := s.WatchGrants(t.Context())
	if err != nil {
		t.Fatalf("WatchGrants: %v", err)
	}
	others := watch(t, s)
	created := createGrant(t, s, newGrant("g1", "spiffe://example.org/w", "e1", grantT0))
	wantEvent(t, grants, store.Event{Revision: created.Revision, Kind: store.EventGrant, Grant: created})
	updated, err := s.UpdateGrant(t.Context(), "g1", func(g *typesv1.Grant) error {
		g.Status = typesv1.GrantStatus_GRANT_STATUS_REVOKED
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateGrant: %v", err)
	}
	wantEvent(t, grants, store.Event{Revision: updated.Revision, Kind: store.EventGrant, Grant: updated, PrevGrant: created})
	// Watch sees no grant event: the first event it gets is the node's.
	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	wantEvent(t, others, store.Event{Revision: node.Revision, Kind: store.EventNode, Node: node})
	select {
	case ev := <-grants:
		t.Errorf("WatchGrants delivered a %v event for a node change", ev.Kind)
	default:
	}
}
