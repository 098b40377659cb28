package bolt_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const benchSubject = "spiffe://example.org/bench/workload"

// benchGrant is an ACTIVE grant as pkg/grant stores it.
func benchGrant(id string, created time.Time) *typesv1.Grant {
	return &typesv1.Grant{
		Id: id, SpiffeId: benchSubject, EntryId: "entry-1", Node: "spiffe://example.org/nhid/agent/x",
		Purpose: "benchmarks grant requests", Owner: "perf@example.org",
		RequestedScopes: []string{"bench:run"}, Scopes: []string{"bench:run"},
		Resource: "bench", Action: "run", Reason: "benchmark", RequestedTtl: 60,
		Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, Rule: "bench",
		CreatedAt: created.Unix(), DecidedAt: created.Unix(), ExpiresAt: created.Add(time.Minute).Unix(),
	}
}

// fillGrants stores n grants of benchSubject spread over the last day.
func fillGrants(b *testing.B, s *bolt.Store, n int, now time.Time) {
	b.Helper()
	for i := range n {
		created := now.Add(-time.Duration(i) * 24 * time.Hour / time.Duration(n+1))
		if _, err := s.CreateGrant(b.Context(), benchGrant(fmt.Sprintf("fill-%06d", i), created)); err != nil {
			b.Fatal(err)
		}
	}
}

// reportLatency adds p50 and p99 in microseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[(len(lat)-1)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkGrantStorePath measures the store's share of one grant request:
// reading the subject's usage counters (GrantUsage), then storing the
// decided grant durably, for a subject with a day's history of grants.
func BenchmarkGrantStorePath(b *testing.B) {
	for _, history := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			s, _ := openStore(b, bolt.Options{})
			now := time.Now()
			fillGrants(b, s, history, now)
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				if _, err := s.GrantUsage(b.Context(), benchSubject, now); err != nil {
					b.Fatal(err)
				}
				if _, err := s.CreateGrant(b.Context(), benchGrant(fmt.Sprintf("g-%08d", i), now)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				i++
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkGrantUsage measures reading a subject's usage counters, the
// store read behind every grant decision, against the size of its last
// day's history.
func BenchmarkGrantUsage(b *testing.B) {
	for _, history := range []int{100, 10000} {
		s, _ := openStore(b, bolt.Options{})
		now := time.Now()
		fillGrants(b, s, history, now)
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.GrantUsage(b.Context(), benchSubject, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreateGrantConcurrent measures grants stored per second when
// many requests arrive at once, each waiting for its own durable commit.
func BenchmarkCreateGrantConcurrent(b *testing.B) {
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s, _ := openStore(b, bolt.Options{})
			now := time.Now()
			var next atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.ResetTimer()
			var wg sync.WaitGroup
			per := max(b.N/writers, 1)
			for range writers {
				wg.Go(func() {
					mine := make([]time.Duration, 0, per)
					for range per {
						id := fmt.Sprintf("g-%08d", next.Add(1))
						start := time.Now()
						if _, err := s.CreateGrant(b.Context(), benchGrant(id, now)); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "grants/s")
			reportLatency(b, lat)
		})
	}
}

var _ store.GrantStore = (*bolt.Store)(nil)
