package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var reputationTests = []suiteTest{
	{"UpdateCreatesTheFirstRecord", testReputationCreate},
	{"UpdateAppliesFnToTheStoredRecord", testReputationUpdate},
	{"FnErrorChangesNothing", testReputationFnError},
	{"SPIFFEIDCannotChange", testReputationSPIFFEIDFixed},
	{"ListPagesInSPIFFEIDOrder", testReputationList},
	{"ConcurrentUpdatesAreNotLost", testReputationConcurrent},
	{"CallersCopiesAreIsolated", testReputationIsolation},
	{"UpdatesDoNotMoveTheRevisionOrReachWatch", testReputationNotWatched},
	{"ScoreReadLeavesOutOnlyTheEvents", testReputationScoreRead},
}

const repSubject = "spiffe://example.org/agent/deployer"

// updateReputation applies fn and fails the test on error.
func updateReputation(t *testing.T, s store.Store, id string, fn func(*typesv1.Reputation) error) *typesv1.Reputation {
	t.Helper()
	r, err := s.UpdateReputation(t.Context(), id, fn)
	if err != nil {
		t.Fatalf("UpdateReputation(%q): %v", id, err)
	}
	return r
}

func getReputation(t *testing.T, s store.Store, id string) *typesv1.Reputation {
	t.Helper()
	r, err := s.GetReputation(t.Context(), id)
	if err != nil {
		t.Fatalf("GetReputation(%q): %v", id, err)
	}
	return r
}

// scoreEvent is a typical change: a denial at a fixed time.
func scoreEvent(r *typesv1.Reputation, score float64, at int64) {
	r.Score, r.UpdatedAt, r.Owner = score, at, "ana@example.org"
	r.Events = append([]*typesv1.ReputationEvent{{
		Kind: "grant_denied", Delta: -20, ScoreAfter: score, At: at, Reason: "policy denied", Reporter: "server", GrantId: "g1",
	}}, r.Events...)
}

func testReputationCreate(t *testing.T, s store.Store) {
	_, err := s.GetReputation(t.Context(), repSubject)
	wantErrIs(t, err, store.ErrNotFound, "GetReputation before any update")
	var seen *typesv1.Reputation
	got := updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		seen = proto.Clone(r).(*typesv1.Reputation)
		scoreEvent(r, 480, 1700000000000000000)
		r.Alerted = true
		return nil
	})
	if diff := protoDiff(&typesv1.Reputation{SpiffeId: repSubject}, seen); diff != "" {
		t.Errorf("fn's record for an unknown subject (-want +got):\n%s", diff)
	}
	want := &typesv1.Reputation{SpiffeId: repSubject}
	scoreEvent(want, 480, 1700000000000000000)
	want.Alerted = true
	if diff := protoDiff(want, got); diff != "" {
		t.Errorf("UpdateReputation result (-want +got):\n%s", diff)
	}
	if diff := protoDiff(want, getReputation(t, s, repSubject)); diff != "" {
		t.Errorf("stored record (-want +got):\n%s", diff)
	}
	_, err = s.UpdateReputation(t.Context(), "", func(*typesv1.Reputation) error { return nil })
	wantErrIs(t, err, store.ErrInvalidArgument, "UpdateReputation with an empty SPIFFE ID")
	_, err = s.UpdateReputation(t.Context(), repSubject, nil)
	wantErrIs(t, err, store.ErrInvalidArgument, "UpdateReputation with a nil fn")
}

func testReputationUpdate(t *testing.T, s store.Store) {
	first := updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		scoreEvent(r, 480, 1)
		return nil
	})
	var seen *typesv1.Reputation
	got := updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		seen = proto.Clone(r).(*typesv1.Reputation)
		scoreEvent(r, 460, 2)
		r.Restricted = true
		return nil
	})
	if diff := protoDiff(first, seen); diff != "" {
		t.Errorf("fn did not get the stored record (-want +got):\n%s", diff)
	}
	if len(got.Events) != 2 || got.Events[0].At != 2 || got.Score != 460 || !got.Restricted {
		t.Errorf("after the second update: %v", got)
	}
	if diff := protoDiff(got, getReputation(t, s, repSubject)); diff != "" {
		t.Errorf("stored record (-returned +stored):\n%s", diff)
	}
}

func testReputationFnError(t *testing.T, s store.Store) {
	want := updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		scoreEvent(r, 480, 1)
		return nil
	})
	boom := errors.New("boom")
	_, err := s.UpdateReputation(t.Context(), repSubject, func(r *typesv1.Reputation) error {
		r.Score = 0
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateReputation returned %v, want fn's error", err)
	}
	if diff := protoDiff(want, getReputation(t, s, repSubject)); diff != "" {
		t.Errorf("a failed update changed the record (-want +got):\n%s", diff)
	}
	other := "spiffe://example.org/never"
	_, err = s.UpdateReputation(t.Context(), other, func(*typesv1.Reputation) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateReputation of a new subject returned %v, want fn's error", err)
	}
	_, err = s.GetReputation(t.Context(), other)
	wantErrIs(t, err, store.ErrNotFound, "GetReputation after a failed first update")
}

func testReputationSPIFFEIDFixed(t *testing.T, s store.Store) {
	_, err := s.UpdateReputation(t.Context(), repSubject, func(r *typesv1.Reputation) error {
		r.SpiffeId = "spiffe://example.org/other"
		return nil
	})
	wantErrIs(t, err, store.ErrInvalidArgument, "UpdateReputation changing spiffe_id")
	for _, id := range []string{repSubject, "spiffe://example.org/other"} {
		_, err := s.GetReputation(t.Context(), id)
		wantErrIs(t, err, store.ErrNotFound, "GetReputation("+id+") after the refused update")
	}
}

func testReputationList(t *testing.T, s store.Store) {
	ids := []string{"spiffe://example.org/c", "spiffe://example.org/a", "spiffe://example.org/d", "spiffe://example.org/b", "spiffe://example.org/e"}
	for i, id := range ids {
		updateReputation(t, s, id, func(r *typesv1.Reputation) error {
			scoreEvent(r, float64(100*i), int64(i))
			return nil
		})
	}
	all, next, err := s.ListReputations(t.Context(), 0, "")
	if err != nil || next != "" {
		t.Fatalf("ListReputations(all): next %q, err %v", next, err)
	}
	want := []string{"spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/c", "spiffe://example.org/d", "spiffe://example.org/e"}
	if diff := protoDiff(want, reputationIDs(all)); diff != "" {
		t.Fatalf("ListReputations order (-want +got):\n%s", diff)
	}
	if all[0].Score != 100 || len(all[0].Events) != 1 {
		t.Errorf("listed record of a: %v", all[0])
	}
	var paged []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > len(ids) {
			t.Fatal("ListReputations pages do not end")
		}
		page, nextToken, err := s.ListReputations(t.Context(), 2, token)
		if err != nil {
			t.Fatalf("ListReputations(2, %q): %v", token, err)
		}
		if len(page) > 2 {
			t.Fatalf("page of %d records, asked for 2", len(page))
		}
		paged = append(paged, reputationIDs(page)...)
		if nextToken == "" {
			break
		}
		token = nextToken
	}
	if diff := protoDiff(want, paged); diff != "" {
		t.Errorf("paged listing (-want +got):\n%s", diff)
	}
	_, _, err = s.ListReputations(t.Context(), -1, "")
	wantErrIs(t, err, store.ErrInvalidArgument, "ListReputations with a negative page size")
	_, _, err = s.ListReputations(t.Context(), 2, "not a page token!")
	wantErrIs(t, err, store.ErrInvalidArgument, "ListReputations with a bad page token")
}

func reputationIDs(rs []*typesv1.Reputation) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.SpiffeId
	}
	return ids
}

// testReputationConcurrent starts every writer on a subject that has no
// record yet: creating the first record races too.
func testReputationConcurrent(t *testing.T, s store.Store) {
	const goroutines, perGoroutine = 8, 10
	errs := make([]error, goroutines)
	parallel(goroutines, func(g int) {
		for i := range perGoroutine {
			_, err := s.UpdateReputation(t.Context(), repSubject, func(r *typesv1.Reputation) error {
				r.Score++
				r.Events = append(r.Events, &typesv1.ReputationEvent{Kind: fmt.Sprintf("w%d-%d", g, i)})
				return nil
			})
			if err != nil {
				errs[g] = err
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent UpdateReputation: %v", err)
	}
	got := getReputation(t, s, repSubject)
	if got.Score != goroutines*perGoroutine || len(got.Events) != goroutines*perGoroutine {
		t.Errorf("score %v and %d events after %d increments: updates were lost", got.Score, len(got.Events), goroutines*perGoroutine)
	}
}

func testReputationIsolation(t *testing.T, s store.Store) {
	var kept *typesv1.Reputation
	got := updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		scoreEvent(r, 480, 1)
		kept = r
		return nil
	})
	want := proto.Clone(got).(*typesv1.Reputation)
	kept.Score, kept.Events[0].Kind = 1, "evil"
	got.Score, got.Events[0].Kind = 2, "evil"
	read := getReputation(t, s, repSubject)
	read.Score, read.Events[0].Kind = 3, "evil"
	list, _, err := s.ListReputations(t.Context(), 0, "")
	if err != nil {
		t.Fatalf("ListReputations: %v", err)
	}
	list[0].Events[0].Kind = "evil"
	if diff := protoDiff(want, getReputation(t, s, repSubject)); diff != "" {
		t.Errorf("stored record changed through a caller's copy (-want +got):\n%s", diff)
	}
}

func testReputationNotWatched(t *testing.T, s store.Store) {
	before := revision(t, s)
	ch, err := s.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
		scoreEvent(r, 480, 1)
		return nil
	})
	if after := revision(t, s); after != before {
		t.Errorf("revision moved from %d to %d on a reputation update", before, after)
	}
	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		if ev.Kind != store.EventNode || ev.Node.GetSpiffeId() != node.SpiffeId {
			t.Errorf("first event after a reputation update is %+v, want the node's creation", ev)
		}
	case <-time.After(eventTimeout):
		t.Fatal("no event for the node's creation")
	}
}

// testReputationScoreRead checks store.ReputationScoreReader, for
// backends that offer it.
func testReputationScoreRead(t *testing.T, s store.Store) {
	sr, ok := s.(store.ReputationScoreReader)
	if !ok {
		t.Skip("the backend does not implement store.ReputationScoreReader")
	}
	_, err := sr.GetReputationScore(t.Context(), repSubject)
	wantErrIs(t, err, store.ErrNotFound, "GetReputationScore of an unknown subject")
	for i := range 3 {
		updateReputation(t, s, repSubject, func(r *typesv1.Reputation) error {
			scoreEvent(r, float64(400+i), int64(i+1))
			r.Alerted, r.Restricted = true, i == 2
			return nil
		})
	}
	want := getReputation(t, s, repSubject)
	want.Events = nil
	got, err := sr.GetReputationScore(t.Context(), repSubject)
	if err != nil {
		t.Fatalf("GetReputationScore: %v", err)
	}
	if diff := protoDiff(want, got); diff != "" {
		t.Errorf("GetReputationScore (-want +got):\n%s", diff)
	}
}
