package manager

import (
	"runtime"
	"testing"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// BenchmarkMemoryPerEntry measures the heap the manager holds per cached
// entry with its pre-minted X.509-SVID (target < 4 KiB), over 10k entries:
// the entry as synced, its index slot, the SVID's chain and key, and what
// persisting it costs the Go heap.
// Run with -benchtime=1x: each iteration builds and measures a full set.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 10000
	for b.Loop() {
		f := newFixture(b, 0)
		f.measure(b, n)
	}
}

func (f *fixture) measure(b *testing.B, n int) {
	b.Helper()
	before := heapAlloc()
	entries := make([]*typesv1.Entry, n)
	for i := range entries {
		entries[i] = workloadEntry(i)
	}
	f.srv.SetEntries(entries...)
	f.m.ApplyEntries(entries, nil)
	entries = nil
	for {
		batch, _ := f.m.plan()
		if len(batch) == 0 {
			break
		}
		f.m.mintBatch(b.Context(), batch)
	}
	f.srv.SetEntries() // the fake server's copy is not the agent's memory
	after := heapAlloc()
	if _, svids := f.m.Counts(); svids != n {
		b.Fatalf("SVIDs held = %d, want %d", svids, n)
	}
	b.ReportMetric(float64(after-before)/float64(n), "bytes/entry")
	runtime.KeepAlive(f.m)
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
