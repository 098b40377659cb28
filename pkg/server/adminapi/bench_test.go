package adminapi

import (
	"fmt"
	"testing"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// BenchmarkBatchCreateEntries measures one full batch over the real socket
// into bbolt: validation, normalisation, one store transaction, audit.
func BenchmarkBatchCreateEntries(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := &adminv1.BatchCreateEntriesRequest{Entries: manyEntries(MaxBatch, fmt.Sprintf("b%d", i))}
		if _, err := h.entries.BatchCreateEntries(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*MaxBatch), "ns/entry")
}
