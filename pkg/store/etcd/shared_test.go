package etcd_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// eventTimeout bounds every wait: generous, the tests assert that things
// happen, never how fast.
const eventTimeout = 10 * time.Second

// TestSharedStore runs its cases on one 3-member cluster; each case gets
// two stores on a fresh prefix, each talking to a different member, as two
// nhid-servers would.
func TestSharedStore(t *testing.T) {
	members := etcdtest.StartCluster(t, 3, etcdtest.Options{})
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b *etcd.Store)
	}{
		{"WritesThroughOneServerReachTheOthersWatchersInOrder", testWatchAcrossServers},
		{"RevisionsAreGlobalSoAResumeWorksThroughAnyServer", testResumeAcrossServers},
		{"AJoinTokenRacedThroughTwoServersIsUsedOnce", testTokenRace},
		{"RacingBatchesStoreEachDuplicateKeyOnce", testBatchRace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("/nhid-test/shared-%d/", prefixes.Add(1))
			a := openStore(t, []string{members[0].ClientURL}, etcd.Config{Prefix: prefix})
			b := openStore(t, []string{members[1].ClientURL}, etcd.Config{Prefix: prefix})
			tc.fn(t, a, b)
		})
	}
}

func entry(spiffeID, parent string, selectors ...string) *typesv1.Entry {
	return &typesv1.Entry{SpiffeId: spiffeID, ParentId: parent, Selectors: selectors, Purpose: "test", Owner: "o@example.org"}
}

func nextEvent(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(eventTimeout):
		t.Fatalf("no event within %v", eventTimeout)
	}
	return store.Event{}
}

func testWatchAcrossServers(t *testing.T, a, b *etcd.Store) {
	events, err := b.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	created, _, err := a.CreateEntries(t.Context(), []*typesv1.Entry{entry("spiffe://example.org/x", "spiffe://example.org/agent"), entry("spiffe://example.org/y", "spiffe://example.org/agent")})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	upd := proto.Clone(created[0]).(*typesv1.Entry)
	upd.Purpose = "changed on b"
	updated, err := b.UpdateEntry(t.Context(), upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if _, err := a.DeleteEntry(t.Context(), created[1].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	deleteRev, err := b.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	want := []store.Event{
		{Revision: created[0].Revision, Kind: store.EventEntry, Entry: created[0]},
		{Revision: created[1].Revision, Kind: store.EventEntry, Entry: created[1]},
		{Revision: updated.Revision, Kind: store.EventEntry, Entry: updated, PrevEntry: created[0]},
		{Revision: deleteRev, Kind: store.EventEntry, PrevEntry: created[1]},
	}
	for i, w := range want {
		if diff := cmp.Diff(w, nextEvent(t, events), protocmp.Transform()); diff != "" {
			t.Fatalf("event %d on the other server (-want +got):\n%s", i, diff)
		}
	}
}

func testResumeAcrossServers(t *testing.T, a, b *etcd.Store) {
	first, _, err := a.CreateEntries(t.Context(), []*typesv1.Entry{entry("spiffe://example.org/1", "spiffe://example.org/agent")})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	since := first[0].Revision
	later, _, err := b.CreateEntries(t.Context(), []*typesv1.Entry{entry("spiffe://example.org/2", "spiffe://example.org/agent")})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if _, err := b.DeleteEntry(t.Context(), first[0].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	for name, s := range map[string]*etcd.Store{"a": a, "b": b} {
		changed, deleted, at, err := s.EntryChangesSince(t.Context(), since)
		if err != nil {
			t.Fatalf("%s: EntryChangesSince: %v", name, err)
		}
		if diff := cmp.Diff([]string{later[0].Id}, ids(changed)); diff != "" {
			t.Errorf("%s: changed (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff([]string{first[0].Id}, deleted); diff != "" {
			t.Errorf("%s: deleted (-want +got):\n%s", name, diff)
		}
		if ra, _ := a.Revision(t.Context()); at != ra {
			t.Errorf("%s: read at %d, the other server's revision is %d", name, at, ra)
		}
	}
}

func ids(es []*typesv1.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Id
	}
	return out
}

func testTokenRace(t *testing.T, a, b *etcd.Store) {
	secret := sha256.Sum256([]byte("secret"))
	now := time.Now()
	if err := a.CreateJoinToken(t.Context(), &typesv1.JoinToken{Id: "tok", SecretHash: secret[:], ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	const racers = 16
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		s := []*etcd.Store{a, b}[i%2]
		wg.Go(func() {
			_, errs[i] = s.UseJoinToken(t.Context(), "tok", secret[:], fmt.Sprintf("spiffe://example.org/agent/%d", i), now)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("use %d: %v, want success or ErrTokenUsed", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d uses succeeded, want exactly 1", ok)
	}
}

func testBatchRace(t *testing.T, a, b *etcd.Store) {
	batch := func() []*typesv1.Entry {
		var es []*typesv1.Entry
		for i := range 50 {
			es = append(es, entry(fmt.Sprintf("spiffe://example.org/w/%d", i), "spiffe://example.org/agent", fmt.Sprintf("unix:uid:%d", i)))
		}
		return es
	}
	var wg sync.WaitGroup
	results := make([][]error, 4)
	for i := range results {
		s := []*etcd.Store{a, b}[i%2]
		wg.Go(func() {
			_, errs, err := s.CreateEntries(t.Context(), batch())
			if err != nil {
				errs = []error{err}
			}
			results[i] = errs
		})
	}
	wg.Wait()
	stored := make([]int, 50)
	for r, errs := range results {
		for i, err := range errs {
			switch {
			case err == nil:
				stored[i]++
			case !errors.Is(err, store.ErrAlreadyExists):
				t.Fatalf("batch %d item %d: %v", r, i, err)
			}
		}
	}
	if want := slices.Repeat([]int{1}, 50); !slices.Equal(stored, want) {
		t.Errorf("times each entry was stored: %v; want each once", stored)
	}
	if n, err := b.CountEntries(t.Context()); err != nil || n != 50 {
		t.Errorf("CountEntries = %d, %v; want 50", n, err)
	}
}
