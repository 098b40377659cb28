package reputation

import (
	"context"
	"fmt"
	"testing"
)

// The cost reputation adds to a grant decision: every decision reads the
// subject's Standing (one bbolt read and the decay); a denial or a release
// also Observes (one fsynced bbolt write).

// history gives the subject n events (a busy subject has MaxEvents).
func history(h *harness, n int) {
	for i := range n {
		h.observe([]Kind{KindGrantReleased, KindGrantDenied}[i%2])
	}
}

// BenchmarkStanding: the record's decoding dominates, so the cost grows
// with the events kept.
func BenchmarkStanding(b *testing.B) {
	for _, n := range []int{0, 1, DefaultMaxEvents} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			h := newHarness(b, nil)
			history(h, n)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.svc.Standing(ctx, subject); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStanding_Parallel(b *testing.B) {
	h := newHarness(b, nil)
	history(h, DefaultMaxEvents)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.svc.Standing(ctx, subject); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkObserve(b *testing.B) {
	h := newHarness(b, nil)
	ctx := context.Background()
	kinds := []Kind{KindGrantReleased, KindGrantDenied, KindGrantReleased, KindGrantReleased, KindGrantReleased, KindGrantReleased}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		// Many subjects, each with a full event list, as on a busy server.
		ev := Event{SPIFFEID: fmt.Sprintf("spiffe://example.org/agent/%d", i%100), Owner: owner, Kind: kinds[i%len(kinds)],
			Reason: "grant released", Reporter: "server", GrantID: "0198d6a2-7c1e-7b3a-9f5e-3c2d1e0f4a5b"}
		if _, err := h.svc.Observe(ctx, ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
