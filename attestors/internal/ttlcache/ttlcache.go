// Package ttlcache is the bounded, expiring, look-up-once cache the
// container and sigstore attestors keep their answers in: at most a fixed
// number of entries (least recently used evicted first), each valid for a
// fixed time, and concurrent misses for one key share a single look-up.
package ttlcache

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nhid/nhid/pkg/clock"
)

// Cache maps keys to values for a while. It is safe for concurrent use.
type Cache[V any] struct {
	max   int
	ttl   time.Duration
	clock clock.Clock

	mu      sync.Mutex
	order   *list.List // front: most recently used; values are *item[V]
	items   map[string]*list.Element
	flights singleflight.Group
}

type item[V any] struct {
	key     string
	value   V
	expires time.Time
}

// New returns a cache of at most max entries, each kept for ttl.
func New[V any](max int, ttl time.Duration, clk clock.Clock) (*Cache[V], error) {
	if max <= 0 {
		return nil, fmt.Errorf("cache size must be positive, got %d", max)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("cache TTL must be positive, got %s", ttl)
	}
	return &Cache[V]{max: max, ttl: ttl, clock: clock.OrReal(clk), order: list.New(), items: make(map[string]*list.Element)}, nil
}

// Get returns the live value of key.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	it := e.Value.(*item[V])
	if !c.clock.Now().Before(it.expires) {
		c.order.Remove(e)
		delete(c.items, key)
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return it.value, true
}

// Add stores value under key for the cache's TTL.
func (c *Cache[V]) Add(key string, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	expires := c.clock.Now().Add(c.ttl)
	if e, ok := c.items[key]; ok {
		it := e.Value.(*item[V])
		it.value, it.expires = value, expires
		c.order.MoveToFront(e)
		return
	}
	c.items[key] = c.order.PushFront(&item[V]{key: key, value: value, expires: expires})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*item[V]).key)
	}
}

// Len is the number of entries held, expired ones included until touched.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// Purge drops every entry.
func (c *Cache[V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.items)
}

// Load is the look-up a cache miss runs.
type Load[V any] func(ctx context.Context) (value V, cache bool, err error)

// Do returns key's cached value or runs load once for all concurrent
// callers of the same key, caching what it returns when it says to. The
// look-up runs under its own context bounded by timeout, not the first
// caller's, so one caller giving up does not fail the others; each
// caller stops waiting when its own ctx ends.
func (c *Cache[V]) Do(ctx context.Context, key string, timeout time.Duration, load Load[V]) (V, error) {
	if v, ok := c.Get(key); ok {
		return v, nil
	}
	ch := c.flights.DoChan(key, func() (any, error) {
		// A caller that missed just before the previous flight finished
		// must not look up again.
		if v, ok := c.Get(key); ok {
			return v, nil
		}
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		v, keep, err := load(lctx)
		if err != nil {
			return nil, err
		}
		if keep {
			c.Add(key, v)
		}
		return v, nil
	})
	select {
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			var zero V
			return zero, r.Err
		}
		return r.Val.(V), nil
	}
}
