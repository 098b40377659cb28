package ttlcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

func newCache(t *testing.T, max int, ttl time.Duration) (*Cache[string], *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	c, err := New[string](max, ttl, clk)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func TestNew_RejectsBadBounds(t *testing.T) {
	for _, tt := range []struct {
		max int
		ttl time.Duration
	}{{0, time.Second}, {-1, time.Second}, {1, 0}, {1, -time.Second}} {
		if _, err := New[int](tt.max, tt.ttl, nil); err == nil {
			t.Errorf("New(%d, %s) succeeded, want an error", tt.max, tt.ttl)
		}
	}
}

func TestGet_EntriesExpireAfterTTL(t *testing.T) {
	c, clk := newCache(t, 10, time.Minute)
	c.Add("a", "1")
	clk.Add(time.Minute - time.Nanosecond)
	if v, ok := c.Get("a"); !ok || v != "1" {
		t.Fatalf("Get before the TTL = %q, %v; want 1, true", v, ok)
	}
	clk.Add(time.Nanosecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("Get at the TTL found the entry, want it expired")
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len after expiry = %d, want 0", n)
	}
}

func TestAdd_EvictsLeastRecentlyUsed(t *testing.T) {
	c, _ := newCache(t, 2, time.Hour)
	c.Add("a", "1")
	c.Add("b", "2")
	c.Get("a") // b is now the least recently used
	c.Add("c", "3")
	if _, ok := c.Get("b"); ok {
		t.Error("b survived, want it evicted")
	}
	for _, k := range []string{"a", "c"} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("%s was evicted, want it kept", k)
		}
	}
	c.Purge()
	if n := c.Len(); n != 0 {
		t.Errorf("Len after Purge = %d, want 0", n)
	}
}

func TestDo_ConcurrentMissesLoadOnce(t *testing.T) {
	c, _ := newCache(t, 10, time.Hour)
	var loads atomic.Int32
	release := make(chan struct{})
	load := func(context.Context) (string, bool, error) {
		loads.Add(1)
		<-release
		return "v", true, nil
	}
	var wg sync.WaitGroup
	results := make([]string, 20)
	for i := range results {
		wg.Go(func() {
			v, err := c.Do(context.Background(), "k", waitTimeout, load)
			if err != nil {
				t.Errorf("Do: %v", err)
			}
			results[i] = v
		})
	}
	// Let every caller reach the flight before it finishes; whether they
	// join it or hit the cache after, load runs once.
	for loads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Errorf("load ran %d times, want 1", n)
	}
	for i, v := range results {
		if v != "v" {
			t.Errorf("caller %d got %q, want v", i, v)
		}
	}
}

func TestDo_ErrorsAndUncacheableValuesAreNotKept(t *testing.T) {
	c, _ := newCache(t, 10, time.Hour)
	boom := errors.New("registry down")
	if _, err := c.Do(context.Background(), "k", waitTimeout, func(context.Context) (string, bool, error) {
		return "", false, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Do err = %v, want %v", err, boom)
	}
	if _, err := c.Do(context.Background(), "k", waitTimeout, func(context.Context) (string, bool, error) {
		return "transient", false, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("k"); ok {
		t.Error("an error or an uncacheable value was cached")
	}
}

func TestDo_CallerGivingUpDoesNotCancelTheLoad(t *testing.T) {
	c, _ := newCache(t, 10, time.Hour)
	started, release := make(chan struct{}), make(chan struct{})
	loadErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var first sync.WaitGroup
	defer first.Wait()
	first.Go(func() {
		_, err := c.Do(ctx, "k", waitTimeout, func(lctx context.Context) (string, bool, error) {
			close(started)
			<-release
			loadErr <- lctx.Err()
			return "v", true, nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the caller who gave up got %v, want context.Canceled", err)
		}
	})
	<-started
	cancel()
	done := make(chan string, 1)
	go func() {
		v, _ := c.Do(context.Background(), "k", waitTimeout, func(context.Context) (string, bool, error) {
			return "second load", true, nil
		})
		done <- v
	}()
	close(release)
	if err := <-loadErr; err != nil {
		t.Errorf("the load's context ended with its first caller: %v", err)
	}
	select {
	case v := <-done:
		if v != "v" && v != "second load" {
			t.Errorf("second caller got %q", v)
		}
	case <-time.After(waitTimeout):
		t.Fatal("second caller hung")
	}
}
