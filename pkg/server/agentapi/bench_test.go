package agentapi

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// BenchmarkSyncSnapshot10k measures a full Sync snapshot of 10,000 entries
// for one node, end to end over mTLS on loopback: the server's reads,
// paging and marshalling plus the client's decoding. Target: < 200 ms/op.
func BenchmarkSyncSnapshot10k(b *testing.B) {
	h := newHarness(b)
	a := h.attest()
	const n, batch = 10000, 1000
	for i := 0; i < n; i += batch {
		entries := make([]*typesv1.Entry, batch)
		for j := range entries {
			entries[j] = workload(fmt.Sprintf("bench/%05d", i+j), a.id.String())
			entries[j].Purpose, entries[j].Owner = "benchmark workload", "bench@example.org"
		}
		h.createEntries(entries...)
	}
	b.ResetTimer()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := a.client.Sync(ctx, &agentv1.SyncRequest{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			m, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			got += len(m.GetUpserts())
			if m.GetSnapshotDone() {
				break
			}
		}
		cancel()
		if got != n {
			b.Fatalf("snapshot had %d entries, want %d", got, n)
		}
	}
}

// BenchmarkSyncPushLatency measures the time from an entry update being
// committed to the agent receiving it on an open Sync stream. Target: < 1 s.
func BenchmarkSyncPushLatency(b *testing.B) {
	h := newHarness(b)
	a := h.attest()
	e := h.createEntries(workload("pushed", a.id.String()))[0]
	r := openSync(b, a.client, 0, 0)
	r.untilDone(b)
	ctx := context.Background()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		upd := proto.Clone(e).(*typesv1.Entry)
		upd.Purpose, upd.Revision = fmt.Sprint("v", i), 0
		if _, err := h.store.UpdateEntry(ctx, upd); err != nil {
			b.Fatal(err)
		}
		for {
			m := r.next(b)
			if len(m.GetUpserts()) == 1 && m.GetUpserts()[0].GetPurpose() == upd.Purpose {
				break
			}
		}
	}
}
