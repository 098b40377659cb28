package agentapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agentid"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestSync_SnapshotInPagesThenPushesChanges(t *testing.T) {
	h := newHarness(t)
	a, b := h.attest(), h.attest()
	mine := h.createEntries(
		workload("w1", a.id.String()), workload("w2", a.id.String()), workload("w3", a.id.String()),
		workload("w4", a.id.String()), workload("w5", a.id.String()),
	)
	h.createEntries(workload("theirs", b.id.String()))

	r := openSync(t, a.client, 0, 2)
	msgs := r.untilDone(t)
	diffShapes(t, []shape{
		{Reset: true, Bundle: true, Upserts: 2},
		{Upserts: 2},
		{Done: true, Upserts: 1, HasRevision: true},
	}, msgs)
	r.waitView(t, "spiffe://example.org/w1", "spiffe://example.org/w2", "spiffe://example.org/w3",
		"spiffe://example.org/w4", "spiffe://example.org/w5")

	ctx := context.Background()
	upd := proto.Clone(mine[0]).(*typesv1.Entry)
	upd.Purpose, upd.Revision = "changed", 0
	updated, err := h.store.UpdateEntry(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	m := r.next(t)
	if len(m.GetUpserts()) != 1 || m.GetUpserts()[0].GetPurpose() != "changed" || m.GetRevision() != updated.GetRevision() {
		t.Fatalf("change message = %v, want the updated entry at revision %d", m, updated.GetRevision())
	}

	// A change for another node is not forwarded: the next message is
	// about the entry created after it.
	h.createEntries(workload("theirs-2", b.id.String()))
	h.createEntries(workload("w6", a.id.String()))
	if m := r.next(t); len(m.GetUpserts()) != 1 || m.GetUpserts()[0].GetSpiffeId() != "spiffe://example.org/w6" {
		t.Fatalf("message = %v, want only w6", m)
	}

	if _, err := h.store.DeleteEntry(ctx, mine[1].GetId()); err != nil {
		t.Fatal(err)
	}
	if m := r.next(t); len(m.GetDeletedIds()) != 1 || m.GetDeletedIds()[0] != mine[1].GetId() {
		t.Fatalf("message = %v, want the deletion of %s", m, mine[1].GetId())
	}
	// Moving an entry to another node withdraws it.
	moved := proto.Clone(mine[2]).(*typesv1.Entry)
	moved.ParentId, moved.Revision = b.id.String(), 0
	if _, err := h.store.UpdateEntry(ctx, moved); err != nil {
		t.Fatal(err)
	}
	r.waitView(t, "spiffe://example.org/w1", "spiffe://example.org/w4", "spiffe://example.org/w5", "spiffe://example.org/w6")
}

func TestSync_AliasEntriesFollowNodeSelectors(t *testing.T) {
	h := newHarness(t)
	a := h.attestWithSelectors("aliased", "test:zone:a", "test:rack:1")
	server := agentid.Server(td).String()
	aliases := h.createEntries(
		&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-a", ParentId: server, Selectors: []string{"test:zone:a"}},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-b", ParentId: server, Selectors: []string{"test:zone:b"}},
	)
	h.createEntries(
		workload("in-zone-a", "spiffe://example.org/zone-a"),
		workload("in-zone-b", "spiffe://example.org/zone-b"),
		workload("direct", a.id.String()),
	)
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	r.waitView(t, "spiffe://example.org/direct", "spiffe://example.org/in-zone-a")

	// The alias stops matching: a new snapshot without its entries.
	ctx := context.Background()
	za := proto.Clone(aliases[0]).(*typesv1.Entry)
	za.Selectors, za.Revision = []string{"test:zone:c"}, 0
	if _, err := h.store.UpdateEntry(ctx, za); err != nil {
		t.Fatal(err)
	}
	if m := r.next(t); !m.GetReset_() {
		t.Fatalf("message after an alias change = %v, want a reset", shapeOf(m))
	}
	r.waitView(t, "spiffe://example.org/direct")

	// A new alias on a node selector and an entry under it.
	h.createEntries(&typesv1.Entry{SpiffeId: "spiffe://example.org/rack-1", ParentId: server, Selectors: []string{"test:rack:1"}})
	h.createEntries(workload("in-rack-1", "spiffe://example.org/rack-1"))
	r.waitView(t, "spiffe://example.org/direct", "spiffe://example.org/in-rack-1")
	// Alias entries themselves are never served.
	for _, e := range r.view.entries {
		if e.GetParentId() == server {
			t.Errorf("alias entry %s was served", e.GetSpiffeId())
		}
	}
}

func TestSync_ResumesFromARevision(t *testing.T) {
	h := newHarness(t)
	a, b := h.attest(), h.attest()
	mine := h.createEntries(workload("keep", a.id.String()), workload("edit", a.id.String()), workload("gone", a.id.String()))
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	since := r.view.rev
	r.cancel()

	ctx := context.Background()
	edit := proto.Clone(mine[1]).(*typesv1.Entry)
	edit.Purpose, edit.Revision = "edited while away", 0
	if _, err := h.store.UpdateEntry(ctx, edit); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.DeleteEntry(ctx, mine[2].GetId()); err != nil {
		t.Fatal(err)
	}
	h.createEntries(workload("new", a.id.String()), workload("theirs", b.id.String()))

	r2 := openSync(t, a.client, since, 0)
	r2.view = r.view // the agent resumes with its cache
	msgs := r2.untilDone(t)
	diffShapes(t, []shape{{Done: true, Bundle: true, Upserts: 2, Deletes: 2, HasRevision: true}}, msgs)
	r2.waitView(t, "spiffe://example.org/keep", "spiffe://example.org/edit", "spiffe://example.org/new")
	if got := r2.view.entries[mine[1].GetId()].GetPurpose(); got != "edited while away" {
		t.Errorf("edited entry purpose = %q", got)
	}
}

func TestSync_FallsBackToASnapshot(t *testing.T) {
	tests := []struct {
		name    string
		disturb func(t *testing.T, h *harness, a *agent, entries []*typesv1.Entry)
		since   func(rev int64) int64
	}{
		{
			name: "tombstones were compacted",
			disturb: func(t *testing.T, h *harness, _ *agent, entries []*typesv1.Entry) {
				ctx := context.Background()
				if _, err := h.store.DeleteEntry(ctx, entries[1].GetId()); err != nil {
					t.Fatal(err)
				}
				rev, _ := h.store.Revision(ctx)
				if err := h.store.PruneTombstones(ctx, rev+1); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:  "revision unknown to the store",
			since: func(rev int64) int64 { return rev + 1_000_000 },
		},
		{
			name: "an alias was deleted while away",
			disturb: func(t *testing.T, h *harness, _ *agent, entries []*typesv1.Entry) {
				if _, err := h.store.DeleteEntry(context.Background(), entries[2].GetId()); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "the node's selectors changed while away",
			disturb: func(t *testing.T, h *harness, a *agent, _ []*typesv1.Entry) {
				_, err := h.store.UpdateNode(context.Background(), a.id.String(), func(n *typesv1.Node) error {
					n.Selectors = []string{"test:zone:z"}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.attestWithSelectors("n", "test:zone:a")
			entries := h.createEntries(
				workload("keep", a.id.String()), workload("gone", a.id.String()),
				&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-a", ParentId: agentid.Server(td).String(), Selectors: []string{"test:zone:a"}},
			)
			h.createEntries(workload("in-zone", "spiffe://example.org/zone-a"))
			r := openSync(t, a.client, 0, 0)
			r.untilDone(t)
			r.cancel()
			since := r.view.rev
			if tt.disturb != nil {
				tt.disturb(t, h, a, entries)
			}
			if tt.since != nil {
				since = tt.since(since)
			}
			r2 := openSync(t, a.client, since, 0)
			if m := r2.untilDone(t); !m[0].GetReset_() {
				t.Fatalf("first message = %v, want a reset snapshot", shapeOf(m[0]))
			}
		})
	}
}

func TestSync_WithdrawsAnEntryWhenItExpires(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	e := workload("brief", a.id.String())
	e.ExpiresAt = time.Now().Add(2 * time.Second).Unix()
	h.createEntries(e, workload("lasting", a.id.String()))
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	r.waitView(t, "spiffe://example.org/brief", "spiffe://example.org/lasting")
	r.waitView(t, "spiffe://example.org/lasting")
}

func TestSync_EndsWhenTheNodeIsEvicted(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
	wantCode(t, r.streamErr(t), codes.PermissionDenied, msgEvicted)
}

func TestSync_SendsANewSnapshotWhenTheWatcherFallsBehind(t *testing.T) {
	h := newHarness(t, withWatchBuffer(1))
	a := h.attest()
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	batch := make([]*typesv1.Entry, 50)
	want := make([]string, 50)
	for i := range batch {
		batch[i] = workload("w"+string(rune('A'+i)), a.id.String())
		want[i] = batch[i].GetSpiffeId()
	}
	h.createEntries(batch...)
	r.waitView(t, want...)
}

func TestSync_ValidatesTheRequest(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	tests := []struct {
		name    string
		req     *agentv1.SyncRequest
		message string
	}{
		{"negative revision", &agentv1.SyncRequest{SinceRevision: -1}, "since_revision: -1 is negative"},
		{"negative page size", &agentv1.SyncRequest{PageSize: -1}, "page_size: -1 is not between 0 and 10000"},
		{"page size too large", &agentv1.SyncRequest{PageSize: 10001}, "page_size: 10001 is not between 0 and 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := a.client.Sync(context.Background(), tt.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, err, codes.InvalidArgument, tt.message)
		})
	}
}

func TestSync_NodeSelectorChangeSendsANewSnapshot(t *testing.T) {
	h := newHarness(t)
	a := h.attestWithSelectors("mover", "test:zone:a")
	server := agentid.Server(td).String()
	h.createEntries(
		&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-a", ParentId: server, Selectors: []string{"test:zone:a"}},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-b", ParentId: server, Selectors: []string{"test:zone:b"}},
	)
	h.createEntries(workload("in-a", "spiffe://example.org/zone-a"), workload("in-b", "spiffe://example.org/zone-b"))
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	r.waitView(t, "spiffe://example.org/in-a")

	_, err := h.store.UpdateNode(context.Background(), a.id.String(), func(n *typesv1.Node) error {
		n.Selectors = []string{"test:zone:b"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := r.next(t); !m.GetReset_() {
		t.Fatalf("message after the node's selectors changed = %v, want a reset", shapeOf(m))
	}
	r.waitView(t, "spiffe://example.org/in-b")
}

func TestSync_ReattestationEndsStreamsOfTheOldSVID(t *testing.T) {
	h := newHarness(t)
	a := h.attestWithSelectors("re", "test:zone:a")
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
	wantCode(t, r.streamErr(t), codes.PermissionDenied, msgEvicted)

	b := h.attestWithSelectors("re", "test:zone:a")
	r2 := openSync(t, b.client, 0, 0)
	r2.untilDone(t)
	// The SVID from before the eviction no longer authenticates.
	r3 := openSync(t, a.client, 0, 0)
	wantCode(t, r3.streamErr(t), codes.PermissionDenied, msgSuperseded)
}
