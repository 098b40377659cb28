package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func openInternal(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "nhid.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testGrant(id string) *typesv1.Grant {
	return &typesv1.Grant{Id: id, SpiffeId: "spiffe://example.org/w", EntryId: "e1",
		Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, CreatedAt: 1_800_000_000, ExpiresAt: 1_800_000_600}
}

// holdCommit makes the next write hold its commit open until n more writes
// have queued behind it, so that they share the commit after it.
func holdCommit(t *testing.T, s *Store, n int) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		errc <- s.update(t.Context(), "hold", func(*writeTx) error {
			for {
				s.qmu.Lock()
				queued := len(s.queue)
				s.qmu.Unlock()
				if queued >= n {
					return nil
				}
				time.Sleep(time.Millisecond)
			}
		})
	}()
	// Wait until the holding write leads.
	for {
		s.qmu.Lock()
		leading := s.leading
		s.qmu.Unlock()
		if leading {
			return errc
		}
		time.Sleep(time.Millisecond)
	}
}

func TestUpdate_ConcurrentWritesShareACommitAndKeepTheirOwnOutcome(t *testing.T) {
	s := openInternal(t)
	events, err := s.WatchGrants(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateGrant(t.Context(), testGrant("taken")); err != nil {
		t.Fatal(err)
	}
	<-events
	const writers = 40
	held := holdCommit(t, s, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		id := fmt.Sprintf("g%02d", i)
		if i%10 == 9 {
			id = "taken" // fails in the shared commit: every write is retried alone
		}
		wg.Go(func() { _, errs[i] = s.CreateGrant(t.Context(), testGrant(id)) })
	}
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if wantTaken := i%10 == 9; wantTaken != errors.Is(err, store.ErrAlreadyExists) || (!wantTaken && err != nil) {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	// Every created grant is delivered once, in grant-revision order.
	seen := map[string]bool{}
	last := int64(1)
	for range writers - writers/10 {
		select {
		case ev := <-events:
			if ev.Revision <= last || seen[ev.Grant.GetId()] {
				t.Fatalf("event %s at revision %d after revision %d (seen before: %v)", ev.Grant.GetId(), ev.Revision, last, seen[ev.Grant.GetId()])
			}
			last, seen[ev.Grant.GetId()] = ev.Revision, true
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d grant events, want %d", len(seen), writers-writers/10)
		}
	}
}

func TestUpdate_WritesQueuedDuringACommitShareTheNext(t *testing.T) {
	s := openInternal(t)
	const writers = 20
	before := s.commits.Load()
	held := holdCommit(t, s, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := s.CreateGrant(t.Context(), testGrant(fmt.Sprintf("g%02d", i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d commits for the held write and %d writes queued behind it, want 2", got, writers)
	}
	grants, _, err := s.ListGrants(t.Context(), store.ListGrantsRequest{})
	if err != nil || len(grants) != writers {
		t.Errorf("ListGrants = %d grants, %v; want %d", len(grants), err, writers)
	}
}

func TestUpdate_AQueuedWriteWhoseCallerGaveUpIsNotCommitted(t *testing.T) {
	s := openInternal(t)
	held := holdCommit(t, s, 2)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var gaveUp, kept error
	wg.Go(func() { _, gaveUp = s.CreateGrant(ctx, testGrant("abandoned")) })
	wg.Go(func() {
		// Queue second, once the first is queued, and cancel the first.
		for {
			s.qmu.Lock()
			queued := len(s.queue)
			s.qmu.Unlock()
			if queued == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		_, kept = s.CreateGrant(t.Context(), testGrant("kept"))
	})
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(gaveUp, context.Canceled) || kept != nil {
		t.Fatalf("CreateGrant = %v (abandoned), %v (kept); want context.Canceled, nil", gaveUp, kept)
	}
	if _, err := s.GetGrant(t.Context(), "abandoned"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetGrant(abandoned) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetGrant(t.Context(), "kept"); err != nil {
		t.Errorf("GetGrant(kept) = %v", err)
	}
}

func TestUpdate_APanickingWriteFailsItsCommitAndLeavesTheStoreUsable(t *testing.T) {
	s := openInternal(t)
	held := holdCommit(t, s, 2)
	var wg sync.WaitGroup
	var panicked, otherPanicked any
	var other error
	wg.Go(func() {
		defer func() { panicked = recover() }()
		_ = s.update(t.Context(), "panic", func(*writeTx) error { panic("boom") })
	})
	wg.Go(func() {
		defer func() { otherPanicked = recover() }()
		for {
			s.qmu.Lock()
			queued := len(s.queue)
			s.qmu.Unlock()
			if queued == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		_, other = s.CreateGrant(t.Context(), testGrant("neighbour"))
	})
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	// The panicking write, queued first, led the shared commit and
	// panicked there; its neighbour got an error, and the queue moved on.
	if panicked == nil || otherPanicked != nil || other == nil {
		t.Fatalf("panics %v (panicking write), %v (neighbour); neighbour's error %v", panicked, otherPanicked, other)
	}
	if _, err := s.CreateGrant(t.Context(), testGrant("after")); err != nil {
		t.Fatalf("CreateGrant after the panic: %v", err)
	}
}
