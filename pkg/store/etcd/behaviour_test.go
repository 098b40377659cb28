package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// TestBehaviour runs the single-member cases on one member.
func TestBehaviour(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	tests := []struct {
		name string
		fn   func(t *testing.T, endpoints []string)
	}{
		{"OpenRefusesAnotherLayoutVersion", testLayoutVersion},
		{"AWatcherThatFallsBehindIsClosed", testWatcherDropped},
		{"CallsAfterCloseFailWithErrClosed", testClosed},
		{"OneLeaderAtATimeAndTheNextTakesOver", testElection},
		{"ConfigProblemsAreReportedAtOnce", testConfig},
		{"AnItemRefusedForItsIDLeavesItsDuplicateKeyToTheNext", testBatchRefusalOrder},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, []string{m.ClientURL}) })
	}
}

func testLayoutVersion(t *testing.T, endpoints []string) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(t.Context(), "/future/meta/schema", "2"); err != nil {
		t.Fatal(err)
	}
	s, err := etcd.Open(t.Context(), etcd.Config{Endpoints: endpoints, Prefix: "/future/"})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a prefix with layout version 2 succeeded")
	}
	if !strings.Contains(err.Error(), `layout version "2" is not supported`) {
		t.Errorf("Open: %v; want it to name the version", err)
	}
}

func testWatcherDropped(t *testing.T, endpoints []string) {
	s := openStore(t, endpoints, etcd.Config{WatchBuffer: 2})
	slow, err := s.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fine, err := s.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	one := func(name string) []*typesv1.Entry {
		return []*typesv1.Entry{entry("spiffe://example.org/"+name, "spiffe://example.org/agent")}
	}
	if _, _, err := s.CreateEntries(t.Context(), one("a")); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, fine); ev.Entry.GetSpiffeId() != "spiffe://example.org/a" {
		t.Fatalf("first event %v", ev)
	}
	// Nobody reads slow: it holds a and b; c is one more than its buffer.
	// fine has received e, so every offer up to d to slow has been made.
	for _, name := range []string{"b", "c", "d", "e"} {
		if _, _, err := s.CreateEntries(t.Context(), one(name)); err != nil {
			t.Fatal(err)
		}
		nextEvent(t, fine)
	}
	var got []string
	for closed := false; !closed; {
		select {
		case ev, ok := <-slow:
			if ok {
				got = append(got, ev.Entry.GetSpiffeId())
			}
			closed = !ok
		case <-time.After(eventTimeout):
			t.Fatalf("the watcher that fell behind was not closed; it delivered %v", got)
		}
	}
	// The event in flight when it was dropped may arrive; nothing after.
	if len(got) > 1 || len(got) == 1 && got[0] != "spiffe://example.org/a" {
		t.Errorf("the dropped watcher delivered %v", got)
	}
	// The watcher that kept up goes on.
	if _, _, err := s.CreateEntries(t.Context(), one("f")); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, fine); ev.Entry.GetSpiffeId() != "spiffe://example.org/f" {
		t.Fatalf("event after the drop %v", ev)
	}
}

func testClosed(t *testing.T, endpoints []string) {
	s, err := etcd.Open(t.Context(), etcd.Config{Endpoints: endpoints, Prefix: fmt.Sprintf("/closed-%d/", prefixes.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, ok := <-events; ok {
		t.Error("watch channel delivered an event after Close")
	}
	if _, err := s.GetEntry(t.Context(), "x"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("GetEntry after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testElection(t *testing.T, endpoints []string) {
	prefix := fmt.Sprintf("/election-%d/", prefixes.Add(1))
	cfg := etcd.Config{Prefix: prefix, LeaseTTL: 2 * time.Second}
	stores := []*etcd.Store{openStore(t, endpoints, cfg), openStore(t, endpoints, cfg)}
	var mu sync.Mutex
	leading := map[int]bool{}
	maxLeaders := 0
	elected := make(chan int, 4)
	ctxs := make([]context.CancelFunc, 2)
	var wg sync.WaitGroup
	for i, s := range stores {
		ctx, cancel := context.WithCancel(t.Context())
		ctxs[i] = cancel
		wg.Go(func() {
			_ = s.Lead(ctx, "jobs", fmt.Sprintf("server-%d", i), func(ctx context.Context) {
				mu.Lock()
				leading[i] = true
				maxLeaders = max(maxLeaders, len(leading))
				mu.Unlock()
				elected <- i
				<-ctx.Done()
				mu.Lock()
				delete(leading, i)
				mu.Unlock()
			})
		})
	}
	defer func() {
		for _, c := range ctxs {
			c()
		}
		wg.Wait()
	}()
	first := waitElected(t, elected)
	// The leader steps down (its server stops): the other takes over.
	ctxs[first]()
	if next := waitElected(t, elected); next == first {
		t.Fatalf("server %d was elected again after it stopped", first)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxLeaders != 1 {
		t.Errorf("%d servers led at once, want 1", maxLeaders)
	}
}

func waitElected(t *testing.T, elected <-chan int) int {
	t.Helper()
	select {
	case i := <-elected:
		return i
	case <-time.After(eventTimeout):
		t.Fatal("nobody was elected")
	}
	return -1
}

func testBatchRefusalOrder(t *testing.T, endpoints []string) {
	s := openStore(t, endpoints, etcd.Config{})
	taken := entry("spiffe://example.org/first", "spiffe://example.org/agent")
	taken.Id = "taken"
	if _, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{taken}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	a := entry("spiffe://example.org/w", "spiffe://example.org/agent")
	a.Id = "taken"
	b := entry("spiffe://example.org/w", "spiffe://example.org/agent")
	created, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(errs[0], store.ErrAlreadyExists) || errs[1] != nil || created[1] == nil {
		t.Fatalf("errs = %v; want the first refused for its id and the second stored", errs)
	}
}

func testConfig(t *testing.T, _ []string) {
	_, err := etcd.Open(t.Context(), etcd.Config{
		Endpoints: []string{""}, Prefix: "no-slash", DialTimeout: -time.Second, LeaseTTL: 1500 * time.Millisecond,
	})
	if err == nil {
		t.Fatal("Open accepted a bad config")
	}
	for _, want := range []string{"endpoints[0]", "prefix", "dial_timeout", "lease_ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open: %v; want it to name %s", err, want)
		}
	}
}

func TestUnavailable_CallsFailWithErrUnavailableWhenEtcdIsDown(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	s := openStore(t, []string{m.ClientURL}, etcd.Config{RequestTimeout: time.Second})
	if _, err := s.CreateNode(t.Context(), &typesv1.Node{SpiffeId: "spiffe://example.org/agent"}); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	_, _, err := s.CreateEntries(t.Context(), []*typesv1.Entry{entry("spiffe://example.org/w", "spiffe://example.org/agent")})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("CreateEntries with etcd down: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "quorum") {
		t.Errorf("error %q does not say what to check", err)
	}
	if _, err := s.GetNode(t.Context(), "spiffe://example.org/agent"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetNode with etcd down: %v, want ErrUnavailable", err)
	}
}

func TestCreateEntries_ABatchBeyondEtcdsLimitsIsRefusedWithAHint(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{MaxTxnOps: 128})
	s := openStore(t, []string{m.ClientURL}, etcd.Config{})
	var es []*typesv1.Entry
	for i := range 100 {
		es = append(es, entry(fmt.Sprintf("spiffe://example.org/%d", i), "spiffe://example.org/agent", "unix:uid:1"))
	}
	_, _, err := s.CreateEntries(t.Context(), es)
	if !errors.Is(err, store.ErrInvalidArgument) || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("CreateEntries of 100 entries with --max-txn-ops=128: %v; want ErrInvalidArgument naming the setting", err)
	}
	if n, err := s.CountEntries(t.Context()); err != nil || n != 0 {
		t.Errorf("CountEntries = %d, %v; want nothing written", n, err)
	}
	// Small batches work on etcd's defaults.
	if _, errs, err := s.CreateEntries(t.Context(), es[:10]); err != nil || errors.Join(errs...) != nil {
		t.Errorf("CreateEntries of 10: %v, %v", err, errs)
	}
}
