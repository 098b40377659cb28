// Package fanout delivers a store's committed events to its watchers. Each
// watcher's backlog is a queue that grows only as far as the watcher lags,
// up to a limit past which it is dropped (its channel closed), so one slow
// consumer never stalls writers and an idle one costs a few KiB rather than
// a preallocated buffer. Both store backends use it.
package fanout

import (
	"context"
	"sync"

	"github.com/nhid/nhid/pkg/store"
)

// Subscriber is one Watch or WatchGrants caller. Its backlog is a queue
// that grows only as far as the caller actually lags, up to the watch
// buffer: a server has a watcher per agent Sync stream, and a channel
// buffer of 4096 events allocated up front would cost a third of a
// megabyte per agent whether or not it is ever used. A forwarding
// goroutine (a few KiB) moves the queue into the caller's channel.
type Subscriber struct {
	ch     chan store.Event
	grants bool
	limit  int

	mu      sync.Mutex
	queue   []store.Event
	dropped bool
	// wake says the queue grew; dropc is closed when the subscription is
	// dropped.
	wake     chan struct{}
	dropc    chan struct{}
	dropOnce sync.Once
}

// shrinkAbove is the queue capacity kept once a burst has drained.
const shrinkAbove = 256

// New returns a subscriber of grant events (grants) or of all other events,
// dropped once more than limit events wait for it.
func New(grants bool, limit int) *Subscriber {
	return &Subscriber{ch: make(chan store.Event), grants: grants, limit: limit,
		wake: make(chan struct{}, 1), dropc: make(chan struct{})}
}

// Offer queues the events of one commit for the caller, or marks it
// dropped when they would take it past its limit. It never blocks, so
// that one slow caller cannot stall the others.
func (sub *Subscriber) Offer(events []store.Event) (ok bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.dropped {
		return false
	}
	n := 0
	for _, ev := range events {
		if (ev.Kind == store.EventGrant) == sub.grants {
			n++
		}
	}
	if n == 0 {
		return true
	}
	if len(sub.queue)+n > sub.limit {
		sub.dropLocked()
		return false
	}
	for _, ev := range events {
		if (ev.Kind == store.EventGrant) == sub.grants {
			sub.queue = append(sub.queue, ev)
		}
	}
	sub.signal()
	return true
}

// Drop ends the subscription: no further event is delivered.
func (sub *Subscriber) Drop() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.dropLocked()
}

func (sub *Subscriber) dropLocked() {
	sub.dropped, sub.queue = true, nil
	sub.dropOnce.Do(func() { close(sub.dropc) })
}

func (sub *Subscriber) signal() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// next waits for the event at the head of the queue; ok is false once
// the subscription is dropped or ctx ends.
func (sub *Subscriber) next(ctx context.Context) (store.Event, bool) {
	for {
		sub.mu.Lock()
		switch {
		case sub.dropped:
			sub.mu.Unlock()
			return store.Event{}, false
		case len(sub.queue) > 0:
			ev := sub.queue[0]
			sub.mu.Unlock()
			return ev, true
		}
		sub.mu.Unlock()
		select {
		case <-sub.wake:
		case <-sub.dropc:
		case <-ctx.Done():
			return store.Event{}, false
		}
	}
}

// pop removes the head once it is delivered; it stays queued while in
// flight, so that it counts against the limit.
func (sub *Subscriber) pop() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.queue) == 0 {
		return
	}
	sub.queue[0] = store.Event{}
	sub.queue = sub.queue[1:]
	if len(sub.queue) == 0 && cap(sub.queue) > shrinkAbove {
		sub.queue = nil
	}
}

// Forward delivers the queue to the caller's channel until the
// subscription is dropped or ctx ends, then closes the channel.
func (sub *Subscriber) Forward(ctx context.Context) {
	defer close(sub.ch)
	for {
		ev, ok := sub.next(ctx)
		if !ok {
			return
		}
		select {
		case sub.ch <- ev:
			sub.pop()
		case <-sub.dropc:
			return
		case <-ctx.Done():
			return
		}
	}
}

// C is the channel the caller reads; Forward closes it.
func (sub *Subscriber) C() <-chan store.Event { return sub.ch }
