package storetest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var watchTests = []suiteTest{
	{"DeliversEveryKindOfChangeInOrder", testWatchEvents},
	{"EveryWatcherGetsEveryEvent", testWatchFanOut},
	{"BatchCreateGivesOneEventPerStoredEntry", testWatchBatch},
	{"ChannelClosesWhenContextEnds", testWatchCancel},
}

// watch subscribes with a context that ends with the test.
func watch(t *testing.T, s store.Store) <-chan store.Event {
	t.Helper()
	ch, err := s.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return ch
}

// nextEvent waits for the next event; a closed channel or a timeout fails.
func nextEvent(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed while waiting for an event")
		}
		return ev
	case <-time.After(eventTimeout):
		t.Fatalf("no event within %v", eventTimeout)
	}
	return store.Event{}
}

// wantEvent compares an event with the expected one.
func wantEvent(t *testing.T, ch <-chan store.Event, want store.Event) {
	t.Helper()
	got := nextEvent(t, ch)
	if diff := protoDiff(want, got); diff != "" {
		t.Fatalf("event (-want +got):\n%s", diff)
	}
}

func testWatchEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEntry(t, s, newEntry("spiffe://example.org/before", "spiffe://example.org/agent"))
	ch := watch(t, s)

	created := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1"))
	wantEvent(t, ch, store.Event{Revision: created.Revision, Kind: store.EventEntry, Entry: created})

	upd := proto.Clone(created).(*typesv1.Entry)
	upd.Selectors = []string{"unix:uid:2"}
	updated, err := s.UpdateEntry(ctx, upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	wantEvent(t, ch, store.Event{Revision: updated.Revision, Kind: store.EventEntry, Entry: updated, PrevEntry: created})

	if _, err := s.DeleteEntry(ctx, created.Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	wantEvent(t, ch, store.Event{Revision: revision(t, s), Kind: store.EventEntry, PrevEntry: updated})

	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	wantEvent(t, ch, store.Event{Revision: node.Revision, Kind: store.EventNode, Node: node})
	node2, err := s.UpdateNode(ctx, node.SpiffeId, func(n *typesv1.Node) error { n.LastSeenAt = 42; return nil })
	if err != nil {
		t.Fatalf("UpdateNode: %v", err)
	}
	wantEvent(t, ch, store.Event{Revision: node2.Revision, Kind: store.EventNode, Node: node2, PrevNode: node})
	if err := s.DeleteNode(ctx, node.SpiffeId); err != nil {
		t.Fatalf("DeleteNode: %v", err)
	}
	wantEvent(t, ch, store.Event{Revision: revision(t, s), Kind: store.EventNode, PrevNode: node2})

	bundle, err := s.UpdateBundle(ctx, "example.org", addAuthority("ca-1"))
	if err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	wantEvent(t, ch, store.Event{Revision: revision(t, s), Kind: store.EventBundle, Bundle: bundle})

	// Writes that change no entry, node or bundle produce no event.
	createToken(t, s, newToken("tok", time.Hour))
	if err := s.RecordIssued(ctx, []*typesv1.IssuedSVID{newIssued("serial", tokenEpoch)}); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	last := createEntry(t, s, newEntry("spiffe://example.org/last", "spiffe://example.org/agent"))
	wantEvent(t, ch, store.Event{Revision: last.Revision, Kind: store.EventEntry, Entry: last})
}

func testWatchFanOut(t *testing.T, s store.Store) {
	watchers := []<-chan store.Event{watch(t, s), watch(t, s), watch(t, s)}
	created := createEntries(t, s, manyEntries(20, "spiffe://example.org/agent")...)
	for i, ch := range watchers {
		for _, e := range created {
			ev := nextEvent(t, ch)
			if ev.Entry.GetId() != e.Id || ev.Revision != e.Revision {
				t.Fatalf("watcher %d got entry %q at revision %d, want %q at %d", i, ev.Entry.GetId(), ev.Revision, e.Id, e.Revision)
			}
		}
	}
}

func testWatchBatch(t *testing.T, s store.Store) {
	existing := createEntry(t, s, newEntry("spiffe://example.org/x", "spiffe://example.org/agent"))
	ch := watch(t, s)
	created, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{
		newEntry("spiffe://example.org/a", "spiffe://example.org/agent"),
		newEntry(existing.SpiffeId, existing.ParentId),
		newEntry("spiffe://example.org/b", "spiffe://example.org/agent"),
	})
	if err != nil || errs[0] != nil || errs[2] != nil || errs[1] == nil {
		t.Fatalf("CreateEntries: %v, %v", errs, err)
	}
	wantEvent(t, ch, store.Event{Revision: created[0].Revision, Kind: store.EventEntry, Entry: created[0]})
	wantEvent(t, ch, store.Event{Revision: created[2].Revision, Kind: store.EventEntry, Entry: created[2]})
	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	// The next event is the node's: the rejected item produced none.
	wantEvent(t, ch, store.Event{Revision: node.Revision, Kind: store.EventNode, Node: node})
}

func testWatchCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	cancel()
	deadline := time.After(eventTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				// The store keeps working for others after a watcher leaves.
				createEntry(t, s, newEntry("spiffe://example.org/after", "spiffe://example.org/agent"))
				return
			}
		case <-deadline:
			t.Fatalf("watch channel still open %v after its context ended", eventTimeout)
		}
	}
}
