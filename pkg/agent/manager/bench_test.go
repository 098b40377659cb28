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

// BenchmarkSubscribe_NewSubscriber measures the manager's share of a
// workload connecting for one fetch: subscribe, first Update, close.
// "idle_parsed" is the agent as configured; "parse_every_time" keeps no
// idle SVID parsed (maxIdle 0), as the manager did before it kept them.
func BenchmarkSubscribe_NewSubscriber(b *testing.B) {
	for _, tt := range []struct {
		name    string
		maxIdle int
	}{{"idle_parsed", maxIdleParsed}, {"parse_every_time", 0}} {
		b.Run(tt.name, func(b *testing.B) {
			f := newFixture(b, 0)
			f.m.maxIdle = tt.maxIdle
			e := workloadEntry(1)
			f.srv.SetEntries(e)
			f.m.ApplyEntries([]*typesv1.Entry{e}, nil)
			for batch, _ := f.m.plan(); len(batch) > 0; batch, _ = f.m.plan() {
				f.m.mintBatch(b.Context(), batch)
			}
			s := sels(1)
			b.ReportAllocs()
			for b.Loop() {
				sub := f.m.Subscribe(s)
				if u := <-sub.Updates(); len(u.Identities) != 1 {
					b.Fatalf("%d identities, want 1", len(u.Identities))
				}
				sub.Close()
			}
		})
	}
}
