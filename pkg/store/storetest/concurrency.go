package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var concurrencyTests = []suiteTest{
	{"ConcurrentWritersGetUniqueOrderedRevisions", testConcurrentWriters},
	{"ConcurrentNodeUpdatesAreAtomic", testConcurrentNodeUpdates},
	{"ConcurrentTokenUsesSucceedOnce", testConcurrentTokenUse},
}

// parallel runs fn(i) for i in [0, n) on n goroutines and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, perWriter = 8, 25
	ch := watch(t, s)
	revs := make([][]int64, writers)
	errs := make([]error, writers)
	parallel(writers, func(w int) {
		for i := range perWriter {
			e := newEntry(fmt.Sprintf("spiffe://example.org/w%d/%d", w, i), "spiffe://example.org/agent")
			created, itemErrs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{e})
			if err == nil {
				err = itemErrs[0]
			}
			if err != nil {
				errs[w] = err
				return
			}
			revs[w] = append(revs[w], created[0].Revision)
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent CreateEntries: %v", err)
	}
	var all []int64
	for w, r := range revs {
		if !slices.IsSorted(r) || len(slices.Compact(slices.Clone(r))) != len(r) {
			t.Errorf("writer %d saw revisions out of order: %v", w, r)
		}
		all = append(all, r...)
	}
	slices.Sort(all)
	if len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("two writes share a revision: %v", all)
	}
	if cur := revision(t, s); cur != all[len(all)-1] {
		t.Errorf("Revision() = %d, want the last write's %d", cur, all[len(all)-1])
	}
	var got []int64
	for range all {
		ev := nextEvent(t, ch)
		if len(got) > 0 && ev.Revision <= got[len(got)-1] {
			t.Fatalf("event revision %d after %d: out of order", ev.Revision, got[len(got)-1])
		}
		if ev.Entry.GetRevision() != ev.Revision {
			t.Fatalf("event at revision %d carries an entry at revision %d", ev.Revision, ev.Entry.GetRevision())
		}
		got = append(got, ev.Revision)
	}
	if !slices.Equal(all, got) {
		t.Errorf("event revisions %v, want the writes' %v", got, all)
	}
}

func testConcurrentNodeUpdates(t *testing.T, s store.Store) {
	const goroutines, perGoroutine = 8, 20
	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	errs := make([]error, goroutines)
	parallel(goroutines, func(g int) {
		for range perGoroutine {
			_, err := s.UpdateNode(t.Context(), node.SpiffeId, func(n *typesv1.Node) error {
				n.LastSeenAt++
				return nil
			})
			if err != nil {
				errs[g] = err
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent UpdateNode: %v", err)
	}
	if got := getNode(t, s, node.SpiffeId).LastSeenAt; got != goroutines*perGoroutine {
		t.Errorf("counter = %d after %d increments: updates were lost", got, goroutines*perGoroutine)
	}
}

func testConcurrentTokenUse(t *testing.T, s store.Store) {
	const goroutines = 8
	tok := newToken("tok", time.Hour)
	createToken(t, s, tok)
	errs := make([]error, goroutines)
	parallel(goroutines, func(g int) {
		_, errs[g] = s.UseJoinToken(t.Context(), "tok", tok.SecretHash, fmt.Sprintf("spiffe://example.org/agent/%d", g), tokenEpoch)
	})
	ok := 0
	for g, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("use %d: %v, want success or ErrTokenUsed", g, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent uses succeeded, want exactly 1", ok)
	}
}
