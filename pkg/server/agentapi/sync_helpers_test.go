package agentapi

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// syncReader reads a Sync stream in the background so tests can wait for
// messages with a timeout.
type syncReader struct {
	msgs   chan *agentv1.SyncResponse
	errc   chan error
	cancel context.CancelFunc
	view   agentView
}

func openSync(t testing.TB, client agentv1.AgentServiceClient, since int64, pageSize int32) *syncReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{SinceRevision: since, PageSize: pageSize})
	if err != nil {
		cancel()
		t.Fatalf("Sync: %v", err)
	}
	r := &syncReader{msgs: make(chan *agentv1.SyncResponse, 1024), errc: make(chan error, 1), cancel: cancel,
		view: agentView{entries: map[string]*typesv1.Entry{}}}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				r.errc <- err
				return
			}
			r.msgs <- m
		}
	}()
	t.Cleanup(cancel)
	return r
}

// next returns the next message, applying it to the reader's view.
func (r *syncReader) next(t testing.TB) *agentv1.SyncResponse {
	t.Helper()
	select {
	case m := <-r.msgs:
		r.view.apply(m)
		return m
	case err := <-r.errc:
		t.Fatalf("Sync stream ended: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("no Sync message within 10s")
	}
	return nil
}

// untilDone reads up to and including the message ending a snapshot or
// resume, returning every message read.
func (r *syncReader) untilDone(t testing.TB) []*agentv1.SyncResponse {
	t.Helper()
	var out []*agentv1.SyncResponse
	for {
		m := r.next(t)
		out = append(out, m)
		if m.GetSnapshotDone() {
			return out
		}
	}
}

// waitView reads messages until the view holds exactly the entries with
// these SPIFFE IDs.
func (r *syncReader) waitView(t testing.TB, spiffeIDs ...string) {
	t.Helper()
	slices.Sort(spiffeIDs)
	deadline := time.Now().Add(waitTimeout)
	for !slices.Equal(r.view.spiffeIDs(), spiffeIDs) {
		if time.Now().After(deadline) {
			t.Fatalf("agent view = %v, want %v", r.view.spiffeIDs(), spiffeIDs)
		}
		r.next(t)
	}
}

// streamErr waits for the stream to end and returns its error.
func (r *syncReader) streamErr(t testing.TB) error {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case <-r.msgs:
		case err := <-r.errc:
			return err
		case <-deadline:
			t.Fatal("Sync stream did not end within 10s")
		}
	}
}

// agentView applies Sync messages the way an agent's cache does.
type agentView struct {
	entries map[string]*typesv1.Entry
	rev     int64
}

func (v *agentView) apply(m *agentv1.SyncResponse) {
	if m.GetReset_() {
		clear(v.entries)
	}
	for _, e := range m.GetUpserts() {
		v.entries[e.GetId()] = e
	}
	for _, id := range m.GetDeletedIds() {
		delete(v.entries, id)
	}
	if m.GetRevision() != 0 {
		v.rev = m.GetRevision()
	}
}

func (v *agentView) spiffeIDs() []string {
	out := []string{}
	for _, e := range v.entries {
		out = append(out, e.GetSpiffeId())
	}
	slices.Sort(out)
	return out
}

// shape summarises a message for comparisons.
type shape struct {
	Reset, Done, Bundle bool
	Upserts, Deletes    int
	HasRevision         bool
}

func shapeOf(m *agentv1.SyncResponse) shape {
	return shape{m.GetReset_(), m.GetSnapshotDone(), m.GetBundle() != nil, len(m.GetUpserts()), len(m.GetDeletedIds()), m.GetRevision() != 0}
}

func shapesOf(msgs []*agentv1.SyncResponse) []shape {
	out := make([]shape, len(msgs))
	for i, m := range msgs {
		out[i] = shapeOf(m)
	}
	return out
}

func diffShapes(t testing.TB, want []shape, msgs []*agentv1.SyncResponse) {
	t.Helper()
	if diff := cmp.Diff(want, shapesOf(msgs)); diff != "" {
		t.Errorf("messages mismatch (-want +got):\n%s", diff)
	}
}

// workload builds an entry under parent.
func workload(path, parent string, sels ...string) *typesv1.Entry {
	if len(sels) == 0 {
		sels = []string{"unix:uid:1000"}
	}
	return &typesv1.Entry{SpiffeId: "spiffe://example.org/" + path, ParentId: parent, Selectors: sels}
}
