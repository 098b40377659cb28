package adminapi

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func manyEntries(n int, prefix string) []*typesv1.Entry {
	out := make([]*typesv1.Entry, n)
	for i := range out {
		out[i] = workloadEntry(fmt.Sprintf("%s/%05d", prefix, i))
	}
	return out
}

func TestBatchCreateEntries_StoresAThousandEntriesInOneStoreCall(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, err := h.entries.BatchCreateEntries(testCtx(t), &adminv1.BatchCreateEntriesRequest{Entries: manyEntries(MaxBatch, "w")})
	if err != nil {
		t.Fatalf("BatchCreateEntries: %v", err)
	}
	if got := len(resp.GetResults()); got != MaxBatch {
		t.Fatalf("%d results, want %d", got, MaxBatch)
	}
	for i, r := range resp.GetResults() {
		want := fmt.Sprintf("spiffe://example.org/w/%05d", i)
		if r.GetStatus().GetCode() != int32(codes.OK) || r.GetEntry().GetSpiffeId() != want {
			t.Fatalf("results[%d] = %v, want OK with %s", i, r, want)
		}
	}
	if n := h.store.creates.Load(); n != 1 {
		t.Errorf("store CreateEntries called %d times, want 1", n)
	}
	if n, err := h.store.CountEntries(testCtx(t)); err != nil || n != MaxBatch {
		t.Errorf("CountEntries = %d, %v; want %d", n, err, MaxBatch)
	}
}

func TestBatchCreateEntries_RejectsTooManyOrNoneAndStoresNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.create(t, workloadEntry("existing"))
	tests := []struct {
		name    string
		entries []*typesv1.Entry
		msg     string
	}{
		{"1001 entries", manyEntries(MaxBatch+1, "w"), "entries: 1001 entries, at most 1000"},
		{"no entries", nil, "entries: at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.snapshot(t)
			_, err := h.entries.BatchCreateEntries(testCtx(t), &adminv1.BatchCreateEntriesRequest{Entries: tt.entries})
			requireCode(t, err, codes.InvalidArgument, tt.msg)
			h.requireUnchanged(t, before)
			if n := h.store.creates.Load(); n != 1 {
				t.Errorf("store CreateEntries called %d times, want only the seeding call", n)
			}
		})
	}
}

func TestBatchCreateEntries_InvalidItemsDoNotStopValidOnes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	bad := workloadEntry("bad")
	bad.Selectors = []string{"nocolon"}
	badTD := workloadEntry("x")
	badTD.SpiffeId = "spiffe://other.org/x"
	req := []*typesv1.Entry{workloadEntry("a"), bad, workloadEntry("a"), badTD, workloadEntry("b"), nil}
	resp, err := h.entries.BatchCreateEntries(testCtx(t), &adminv1.BatchCreateEntriesRequest{Entries: req})
	if err != nil {
		t.Fatalf("BatchCreateEntries: %v", err)
	}
	type outcome struct {
		Code     codes.Code
		SpiffeID string
	}
	var got []outcome
	for _, r := range resp.GetResults() {
		got = append(got, outcome{codes.Code(r.GetStatus().GetCode()), r.GetEntry().GetSpiffeId()})
	}
	want := []outcome{
		{codes.OK, "spiffe://example.org/a"},
		{codes.InvalidArgument, ""},
		{codes.AlreadyExists, ""},
		{codes.InvalidArgument, ""},
		{codes.OK, "spiffe://example.org/b"},
		{codes.InvalidArgument, ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("outcomes (-want +got):\n%s", diff)
	}
	msgs := map[int]string{1: "entry.selectors[0]", 2: "already exists", 3: "entry.spiffe_id", 5: "entry.spiffe_id: is required"}
	for i, m := range msgs {
		if msg := resp.GetResults()[i].GetStatus().GetMessage(); !contains(msg, m) {
			t.Errorf("results[%d] message %q does not contain %q", i, msg, m)
		}
	}
	if n := h.store.creates.Load(); n != 1 {
		t.Errorf("store CreateEntries called %d times, want 1", n)
	}
	if n, err := h.store.CountEntries(testCtx(t)); err != nil || n != 2 {
		t.Errorf("CountEntries = %d, %v; want 2", n, err)
	}
}

func TestBatchCreateEntries_AllInvalidMakesNoStoreCall(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	before := h.snapshot(t)
	bad := workloadEntry("bad")
	bad.X509Ttl = -1
	resp, err := h.entries.BatchCreateEntries(testCtx(t), &adminv1.BatchCreateEntriesRequest{Entries: []*typesv1.Entry{bad}})
	if err != nil {
		t.Fatalf("BatchCreateEntries: %v", err)
	}
	if c := resp.GetResults()[0].GetStatus().GetCode(); c != int32(codes.InvalidArgument) {
		t.Errorf("code = %v, want InvalidArgument", codes.Code(c))
	}
	if n := h.store.creates.Load(); n != 0 {
		t.Errorf("store CreateEntries called %d times, want 0", n)
	}
	h.requireUnchanged(t, before)
}
