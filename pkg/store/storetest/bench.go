package storetest

import (
	"fmt"
	"testing"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// RunBenchmarks runs the store benchmarks as sub-benchmarks. open must
// return a fresh, empty store and register its cleanup (b.Cleanup) itself.
func RunBenchmarks(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("CreateEntries/batch=1000", func(b *testing.B) { benchCreateEntries(b, open(b), 1000) })
	b.Run("CreateEntries/batch=1", func(b *testing.B) { benchCreateEntries(b, open(b), 1) })
	b.Run("ListEntriesByParent/entries=10000", func(b *testing.B) { benchListByParent(b, open(b)) })
	b.Run("ListEntries/rare-selector-and-common-selector", func(b *testing.B) { benchListSelectors(b, open(b)) })
	b.Run("EntryChangesSince/changes=100-of-10000", func(b *testing.B) { benchChangesSince(b, open(b)) })
}

// benchEntries builds n distinct entries under parent; tag keeps the
// batches of one benchmark from colliding.
func benchEntries(n int, parent, tag string) []*typesv1.Entry {
	out := make([]*typesv1.Entry, n)
	for i := range out {
		out[i] = &typesv1.Entry{
			SpiffeId:     fmt.Sprintf("spiffe://example.org/%s/workload/%d", tag, i),
			ParentId:     parent,
			Selectors:    []string{fmt.Sprintf("unix:uid:%d", 1000+i%50), "k8s:ns:prod", fmt.Sprintf("k8s:sa:%s-%d", tag, i)},
			Purpose:      "benchmark workload",
			Owner:        "owner@example.org",
			ScopeCeiling: []string{"read", "write"},
			X509Ttl:      3600,
			DnsNames:     []string{fmt.Sprintf("w%d.example.org", i)},
		}
	}
	return out
}

// fill stores n entries under parent in batches of 1000.
func fill(b *testing.B, s store.Store, n int, parent, tag string) []*typesv1.Entry {
	b.Helper()
	var all []*typesv1.Entry
	for off := 0; off < n; off += 1000 {
		batch := benchEntries(min(1000, n-off), parent, fmt.Sprintf("%s-%d", tag, off))
		created, errs, err := s.CreateEntries(b.Context(), batch)
		if err != nil {
			b.Fatalf("CreateEntries: %v", err)
		}
		for i, err := range errs {
			if err != nil {
				b.Fatalf("CreateEntries: entries[%d]: %v", i, err)
			}
		}
		all = append(all, created...)
	}
	return all
}

// benchCreateEntries measures throughput with large batches and, with
// batches of one, the latency of a durable commit.
func benchCreateEntries(b *testing.B, s store.Store, batchSize int) {
	batches := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		batch := benchEntries(batchSize, "spiffe://example.org/agent", fmt.Sprintf("b%d", batches))
		b.StartTimer()
		_, errs, err := s.CreateEntries(b.Context(), batch)
		if err != nil {
			b.Fatalf("CreateEntries: %v", err)
		}
		for i, err := range errs {
			if err != nil {
				b.Fatalf("CreateEntries: entries[%d]: %v", i, err)
			}
		}
		batches++
	}
	b.ReportMetric(float64(batches*batchSize)/b.Elapsed().Seconds(), "entries/s")
}

func benchListByParent(b *testing.B, s store.Store) {
	const parent = "spiffe://example.org/agent/target"
	fill(b, s, 10000, parent, "target")
	fill(b, s, 10000, "spiffe://example.org/agent/other", "other")
	b.ReportAllocs()
	for b.Loop() {
		got, _, err := s.ListEntriesByParent(b.Context(), []string{parent})
		if err != nil {
			b.Fatalf("ListEntriesByParent: %v", err)
		}
		if len(got) != 10000 {
			b.Fatalf("ListEntriesByParent returned %d entries, want 10000", len(got))
		}
	}
}

func benchListSelectors(b *testing.B, s store.Store) {
	all := fill(b, s, 10000, "spiffe://example.org/agent", "sel")
	rare := all[4242].Selectors[2]
	b.ReportAllocs()
	for b.Loop() {
		got, _, err := s.ListEntries(b.Context(), store.ListEntriesRequest{Selectors: []string{"k8s:ns:prod", rare}})
		if err != nil {
			b.Fatalf("ListEntries: %v", err)
		}
		if len(got) != 1 {
			b.Fatalf("ListEntries returned %d entries, want 1", len(got))
		}
	}
}

func benchChangesSince(b *testing.B, s store.Store) {
	fill(b, s, 9900, "spiffe://example.org/agent", "old")
	rev, err := s.Revision(b.Context())
	if err != nil {
		b.Fatalf("Revision: %v", err)
	}
	fill(b, s, 100, "spiffe://example.org/agent", "new")
	b.ReportAllocs()
	for b.Loop() {
		changed, _, _, err := s.EntryChangesSince(b.Context(), rev)
		if err != nil {
			b.Fatalf("EntryChangesSince: %v", err)
		}
		if len(changed) != 100 {
			b.Fatalf("EntryChangesSince returned %d entries, want 100", len(changed))
		}
	}
}
