package adminapi

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// listAll follows next_page_token and returns the SPIFFE IDs and the number
// of pages.
func (h *harness) listAll(t *testing.T, req *adminv1.ListEntriesRequest) ([]string, int) {
	t.Helper()
	var ids []string
	pages := 0
	for {
		resp, err := h.entries.ListEntries(testCtx(t), req)
		if err != nil {
			t.Fatalf("ListEntries: %v", err)
		}
		pages++
		for _, e := range resp.GetEntries() {
			ids = append(ids, e.GetSpiffeId())
		}
		if resp.GetNextPageToken() == "" {
			return ids, pages
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func TestListEntries_Filters(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a := workloadEntry("a")
	b := workloadEntry("b")
	b.ParentId = agentB
	c := workloadEntry("c")
	c.Selectors = []string{"k8s:ns:c"}
	for _, e := range []*typesv1.Entry{a, b, c} {
		h.create(t, e)
	}
	tests := []struct {
		name string
		req  *adminv1.ListEntriesRequest
		want []string
	}{
		{"no filter", &adminv1.ListEntriesRequest{}, []string{"a", "b", "c"}},
		{"by spiffe_id", &adminv1.ListEntriesRequest{SpiffeId: "spiffe://example.org/b"}, []string{"b"}},
		{"by parent_id", &adminv1.ListEntriesRequest{ParentId: agentA}, []string{"a", "c"}},
		{"by selector", &adminv1.ListEntriesRequest{Selectors: []string{"unix:uid:1000"}}, []string{"a", "b"}},
		{"by every selector given", &adminv1.ListEntriesRequest{Selectors: []string{"unix:uid:1000", "unix:path:/usr/bin/a"}}, []string{"a"}},
		{"by parent and selector", &adminv1.ListEntriesRequest{ParentId: agentA, Selectors: []string{"k8s:ns:c"}}, []string{"c"}},
		{"nothing matches", &adminv1.ListEntriesRequest{SpiffeId: "spiffe://example.org/zzz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, _ := h.listAll(t, tt.req)
			var got []string
			for _, id := range ids {
				got = append(got, strings.TrimPrefix(id, "spiffe://example.org/"))
			}
			// The store orders by id, which is random: compare as sets.
			if diff := cmp.Diff(tt.want, sorted(got)); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListEntries_PagesDefaultTo500AndCapAt5000(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for i := 0; i < 6; i++ {
		_, err := h.entries.BatchCreateEntries(testCtx(t), &adminv1.BatchCreateEntriesRequest{Entries: manyEntries(MaxBatch, fmt.Sprintf("p%d", i))})
		if err != nil {
			t.Fatalf("BatchCreateEntries: %v", err)
		}
	}
	tests := []struct {
		name      string
		pageSize  int32
		firstPage int
		pages     int
	}{
		{"default", 0, DefaultPageSize, 12},
		{"explicit", 2500, 2500, 3},
		{"above the cap", 100000, MaxPageSize, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.entries.ListEntries(testCtx(t), &adminv1.ListEntriesRequest{PageSize: tt.pageSize})
			if err != nil {
				t.Fatalf("ListEntries: %v", err)
			}
			if got := len(resp.GetEntries()); got != tt.firstPage {
				t.Errorf("first page holds %d entries, want %d", got, tt.firstPage)
			}
			ids, pages := h.listAll(t, &adminv1.ListEntriesRequest{PageSize: tt.pageSize})
			if len(ids) != 6*MaxBatch || pages != tt.pages {
				t.Errorf("listing all gave %d entries in %d pages, want %d in %d", len(ids), pages, 6*MaxBatch, tt.pages)
			}
			if len(unique(ids)) != len(ids) {
				t.Error("paging returned an entry twice")
			}
		})
	}
}

func TestListEntries_BadRequestsAreInvalidArgument(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name string
		req  *adminv1.ListEntriesRequest
		msg  string
	}{
		{"negative page_size", &adminv1.ListEntriesRequest{PageSize: -1}, "page_size"},
		{"malformed spiffe_id filter", &adminv1.ListEntriesRequest{SpiffeId: "not-an-id"}, "spiffe_id"},
		{"malformed parent_id filter", &adminv1.ListEntriesRequest{ParentId: "spiffe://"}, "parent_id"},
		{"selector without a colon", &adminv1.ListEntriesRequest{Selectors: []string{"unix:uid:1", "x"}}, "selectors[1]"},
		{"huge page_token", &adminv1.ListEntriesRequest{PageToken: strings.Repeat("A", maxPageToken+1)}, "page_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.entries.ListEntries(testCtx(t), tt.req)
			requireCode(t, err, codes.InvalidArgument, tt.msg)
		})
	}
}

// A page_token the store cannot decode is the caller's mistake: the store's
// message, naming the field, comes back as InvalidArgument, nothing changes
// and no server failure is logged.
func TestListEntries_MalformedPageTokenIsInvalidArgument(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.create(t, workloadEntry("a"))
	h.create(t, workloadEntry("b"))
	first, err := h.entries.ListEntries(testCtx(t), &adminv1.ListEntriesRequest{PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("ListEntries = %v, %v; want a first page with a next_page_token", first, err)
	}
	tests := []struct {
		name  string
		token string
	}{
		{"not base64", "!not a token!"},
		{"padded base64", first.GetNextPageToken() + "=="},
		{"base64 with a stray character", "%" + first.GetNextPageToken()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.snapshot(t)
			_, err := h.entries.ListEntries(testCtx(t), &adminv1.ListEntriesRequest{PageSize: 1, PageToken: tt.token})
			requireCode(t, err, codes.InvalidArgument, "page_token", "malformed")
			h.requireUnchanged(t, before)
		})
	}
	if logs := h.logs.String(); contains(logs, "store failure") {
		t.Errorf("a malformed page_token was logged as a server failure:\n%s", logs)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func unique(s []string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}
