package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var listTests = []suiteTest{
	{"FiltersSelectEntriesHavingAllGivenValues", testListFilters},
	{"PagesCoverEveryEntryOnceInIDOrder", testListPagination},
	{"PagesOfAFilteredList", testListPaginationFiltered},
	{"MalformedPageTokenIsInvalidArgument", testListBadPageToken},
	{"NegativePageSizeIsInvalidArgument", testListNegativePageSize},
	{"ByParentReturnsTheEntriesOfEveryGivenParent", testListByParent},
	{"CountEntries", testCountEntries},
}

func testListFilters(t *testing.T, s store.Store) {
	const (
		a, b, c = "spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/c"
		p1, p2  = "spiffe://example.org/agent/1", "spiffe://example.org/agent/2"
	)
	es := createEntries(t, s,
		newEntry(a, p1, "x:1", "y:1"),
		newEntry(a, p2, "x:1"),
		newEntry(b, p1, "x:1", "y:2"),
		newEntry(c, p1, "y:1", "z:1"),
	)
	e1, e2, e3, e4 := es[0], es[1], es[2], es[3]
	tests := []struct {
		name string
		req  store.ListEntriesRequest
		want []*typesv1.Entry
	}{
		{"no filter", store.ListEntriesRequest{}, es},
		{"SPIFFE ID", store.ListEntriesRequest{SpiffeID: a}, []*typesv1.Entry{e1, e2}},
		{"parent", store.ListEntriesRequest{ParentID: p1}, []*typesv1.Entry{e1, e3, e4}},
		{"one selector", store.ListEntriesRequest{Selectors: []string{"x:1"}}, []*typesv1.Entry{e1, e2, e3}},
		{"two selectors", store.ListEntriesRequest{Selectors: []string{"x:1", "y:1"}}, []*typesv1.Entry{e1}},
		{"two selectors reversed", store.ListEntriesRequest{Selectors: []string{"y:1", "x:1"}}, []*typesv1.Entry{e1}},
		{"parent and selector", store.ListEntriesRequest{ParentID: p1, Selectors: []string{"y:1"}}, []*typesv1.Entry{e1, e4}},
		{"SPIFFE ID and parent", store.ListEntriesRequest{SpiffeID: a, ParentID: p2}, []*typesv1.Entry{e2}},
		{"every filter", store.ListEntriesRequest{SpiffeID: c, ParentID: p1, Selectors: []string{"z:1", "y:1"}}, []*typesv1.Entry{e4}},
		{"selectors no entry has together", store.ListEntriesRequest{Selectors: []string{"x:1", "z:1"}}, nil},
		{"unknown selector", store.ListEntriesRequest{Selectors: []string{"q:9"}}, nil},
		{"unknown SPIFFE ID", store.ListEntriesRequest{SpiffeID: "spiffe://example.org/none"}, nil},
		{"unknown parent", store.ListEntriesRequest{ParentID: "spiffe://example.org/none"}, nil},
		{"value prefix is not a match", store.ListEntriesRequest{SpiffeID: "spiffe://example.org/"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, next, err := s.ListEntries(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("ListEntries: %v", err)
			}
			if next != "" {
				t.Errorf("unpaged list returned next page token %q", next)
			}
			want := slices.Clone(tc.want)
			slices.SortFunc(want, byID)
			if diff := protoDiff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

// listAllPages follows page tokens to the end and returns every id seen.
func listAllPages(t *testing.T, s store.Store, req store.ListEntriesRequest) (ids []string, pages []int) {
	t.Helper()
	for range 10000 {
		page, next, err := s.ListEntries(t.Context(), req)
		if err != nil {
			t.Fatalf("ListEntries(page %d): %v", len(pages), err)
		}
		if req.PageSize > 0 && len(page) > req.PageSize {
			t.Fatalf("page %d holds %d entries, more than the page size %d", len(pages), len(page), req.PageSize)
		}
		ids = append(ids, entryIDs(page)...)
		pages = append(pages, len(page))
		if next == "" {
			return ids, pages
		}
		req.PageToken = next
	}
	t.Fatal("ListEntries kept returning page tokens")
	return nil, nil
}

func testListPagination(t *testing.T, s store.Store) {
	const total, pageSize = 2500, 1000
	var all []*typesv1.Entry
	for batch := range total / 500 {
		es := manyEntries(500, fmt.Sprintf("spiffe://example.org/agent/%d", batch))
		for i, e := range es {
			e.SpiffeId = fmt.Sprintf("spiffe://example.org/w/%d/%d", batch, i)
		}
		all = append(all, createEntries(t, s, es...)...)
	}
	ids, pages := listAllPages(t, s, store.ListEntriesRequest{PageSize: pageSize})
	if diff := cmp.Diff(sortedIDs(all...), ids); diff != "" {
		t.Errorf("paged ids are not every id once, in order (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1000, 1000, 500}, pages); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}
	unpaged, next, err := s.ListEntries(t.Context(), store.ListEntriesRequest{})
	if err != nil || next != "" || len(unpaged) != total {
		t.Errorf("ListEntries with page size 0 = %d entries, token %q, %v; want all %d and no token", len(unpaged), next, err, total)
	}
}

func testListPaginationFiltered(t *testing.T, s store.Store) {
	es := manyEntries(60, "spiffe://example.org/agent")
	var want []*typesv1.Entry
	for i, e := range es {
		if i%3 == 0 {
			e.Selectors = append(e.Selectors, "tier:gold")
			e.ParentId = "spiffe://example.org/agent/gold"
		}
	}
	for i, e := range createEntries(t, s, es...) {
		if i%3 == 0 {
			want = append(want, e)
		}
	}
	for _, req := range []store.ListEntriesRequest{
		{PageSize: 7, Selectors: []string{"tier:gold"}},
		{PageSize: 7, ParentID: "spiffe://example.org/agent/gold"},
		{PageSize: 7, ParentID: "spiffe://example.org/agent/gold", Selectors: []string{"tier:gold"}},
		{PageSize: 20, Selectors: []string{"tier:gold"}},
	} {
		ids, _ := listAllPages(t, s, req)
		if diff := cmp.Diff(sortedIDs(want...), ids); diff != "" {
			t.Errorf("paged ids of %+v (-want +got):\n%s", req, diff)
		}
	}
}

func testListBadPageToken(t *testing.T, s store.Store) {
	createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...)
	createNode(t, s, newNode("spiffe://example.org/agent"))
	for _, token := range []string{"%%%not a token%%%", "!", "\x00\xff"} {
		_, _, err := s.ListEntries(t.Context(), store.ListEntriesRequest{PageSize: 1, PageToken: token})
		wantErrIs(t, err, store.ErrInvalidArgument, fmt.Sprintf("ListEntries with page token %q", token))
		_, _, err = s.ListNodes(t.Context(), 1, token)
		wantErrIs(t, err, store.ErrInvalidArgument, fmt.Sprintf("ListNodes with page token %q", token))
	}
}

func testListNegativePageSize(t *testing.T, s store.Store) {
	createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...)
	createNode(t, s, newNode("spiffe://example.org/agent"))
	tests := []struct {
		name string
		list func(pageSize int) error
	}{
		{"ListEntries", func(n int) error {
			_, _, err := s.ListEntries(t.Context(), store.ListEntriesRequest{PageSize: n})
			return err
		}},
		{"ListNodes", func(n int) error { _, _, err := s.ListNodes(t.Context(), n, ""); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{-1, -1000} {
				wantErrIs(t, tc.list(n), store.ErrInvalidArgument, fmt.Sprintf("%s with page size %d", tc.name, n))
			}
		})
	}
}

func testListByParent(t *testing.T, s store.Store) {
	byParent := map[string][]*typesv1.Entry{}
	for _, p := range []string{"spiffe://example.org/p1", "spiffe://example.org/p2", "spiffe://example.org/p3"} {
		es := manyEntries(5, p)
		for i, e := range es {
			e.SpiffeId = fmt.Sprintf("%s/w/%d", p, i)
		}
		byParent[p] = createEntries(t, s, es...)
	}
	tests := []struct {
		name    string
		parents []string
		want    []*typesv1.Entry
	}{
		{"one parent", []string{"spiffe://example.org/p2"}, byParent["spiffe://example.org/p2"]},
		{"two parents", []string{"spiffe://example.org/p3", "spiffe://example.org/p1"},
			slices.Concat(byParent["spiffe://example.org/p1"], byParent["spiffe://example.org/p3"])},
		{"a parent twice", []string{"spiffe://example.org/p1", "spiffe://example.org/p1"}, byParent["spiffe://example.org/p1"]},
		{"unknown parent", []string{"spiffe://example.org/none"}, nil},
		{"no parent", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, err := s.ListEntriesByParent(t.Context(), tc.parents)
			if err != nil {
				t.Fatalf("ListEntriesByParent: %v", err)
			}
			want := slices.Clone(tc.want)
			slices.SortFunc(want, byID)
			if diff := protoDiff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if cur := revision(t, s); rev != cur {
				t.Errorf("read at revision %d, current revision is %d", rev, cur)
			}
		})
	}
}

func testCountEntries(t *testing.T, s store.Store) {
	count := func(want int) {
		t.Helper()
		if n, err := s.CountEntries(t.Context()); err != nil || n != want {
			t.Fatalf("CountEntries = %d, %v; want %d", n, err, want)
		}
	}
	count(0)
	es := createEntries(t, s, manyEntries(3, "spiffe://example.org/agent")...)
	count(3)
	if _, err := s.DeleteEntry(t.Context(), es[1].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	count(2)
}
