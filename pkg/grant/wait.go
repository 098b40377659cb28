package grant

import (
	"context"
	"sync"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Wait blocks while the grant is PENDING and returns it once it has been
// decided, with its Txn-Token if it became ACTIVE: approved (on this
// server or any other sharing the store), denied, released, revoked, or
// past its approval deadline, which is recorded DENIED ("approval timed
// out"). The token of an approved grant is signed here, for the life the
// grant has left. Errors: ctx's, store.ErrNotFound, or a store failure.
func (s *Service) Wait(ctx context.Context, id string) (Result, error) {
	// Subscribe before reading, so no change between the read and the
	// wait goes unnoticed.
	ch := s.waiters.add(id)
	defer s.waiters.remove(id, ch)
	for {
		g, err := s.Get(ctx, id)
		if err != nil {
			return Result{}, err
		}
		switch g.GetStatus() {
		case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		case typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
			return s.tokenFor(ctx, g)
		default:
			return Result{Grant: g}, nil
		}
		wait := s.recheck
		if d := deadline(g); d != 0 {
			wait = max(min(time.Unix(d, 0).Sub(s.clock.Now()), wait), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// waiters are the pending waits by grant id, woken when a grant changes.
type waiters struct {
	mu   sync.Mutex
	byID map[string]map[chan struct{}]struct{}
}

func newWaiters() *waiters {
	return &waiters{byID: make(map[string]map[chan struct{}]struct{})}
}

func (w *waiters) add(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID[id] == nil {
		w.byID[id] = make(map[chan struct{}]struct{})
	}
	w.byID[id][ch] = struct{}{}
	return ch
}

func (w *waiters) remove(id string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byID[id], ch)
	if len(w.byID[id]) == 0 {
		delete(w.byID, id)
	}
}

// wake tells the waits on id to read the grant again.
func (w *waiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byID[id] {
		poke(ch)
	}
}

// wakeAll wakes every wait, after changes may have been missed.
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, chs := range w.byID {
		for ch := range chs {
			poke(ch)
		}
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already woken
	}
}

// follow wakes the waits of every grant that changes, until ctx ends. When
// the store drops the subscription it subscribes again and wakes everyone,
// since changes may have been missed in between.
func (s *Service) follow(ctx context.Context) {
	retry := time.Second
	for ctx.Err() == nil {
		ch, err := s.store.WatchGrants(ctx)
		if err != nil {
			s.warn(ctx, "watch grants", err)
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		s.waiters.wakeAll()
		for ev := range ch {
			s.waiters.wake(ev.Grant.GetId())
		}
		if ctx.Err() == nil {
			s.log.Warn("grant watch fell behind; subscribing again")
		}
	}
}
