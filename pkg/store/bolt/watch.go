package bolt

import (
	"context"
	"fmt"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/internal/fanout"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Watch streams every entry, node and bundle change committed after it
// returns. Registration happens under the write lock, so a change is either
// committed before Watch returns (and not delivered) or delivered.
func (s *Store) Watch(ctx context.Context) (<-chan store.Event, error) {
	return s.watch(ctx, "watch", false)
}

// watch registers a watcher of grant events (grants) or of the others.
// Grants are kept away from Watch, whose watchers (one per agent Sync
// stream) have no use for them.
func (s *Store) watch(ctx context.Context, op string, grants bool) (<-chan store.Event, error) {
	if err := s.check(ctx, op); err != nil {
		return nil, err
	}
	sub := fanout.New(grants, s.watchBuffer)
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, store.ErrClosed)
	}
	s.watchers[sub] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		sub.Forward(ctx)
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.mu.Lock()
		s.removeWatcherLocked(sub)
		s.mu.Unlock()
	}()
	return sub.C(), nil
}

// publishLocked hands committed events to every watcher without blocking:
// a watcher that falls watchBuffer events behind is dropped, so that one
// slow consumer can never stall writes. The caller holds s.mu.
func (s *Store) publishLocked(events []store.Event) {
	if len(events) == 0 {
		return
	}
	for sub := range s.watchers {
		if !sub.Offer(events) {
			s.log.Warn("store watcher fell behind and was dropped",
				telemetry.Revision, events[len(events)-1].Revision, "buffer", s.watchBuffer)
			s.removeWatcherLocked(sub)
		}
	}
}

// removeWatcherLocked ends sub's subscription once; its forwarding
// goroutine then closes the caller's channel. The caller holds s.mu.
func (s *Store) removeWatcherLocked(sub *fanout.Subscriber) {
	if _, ok := s.watchers[sub]; !ok {
		return
	}
	delete(s.watchers, sub)
	sub.Drop()
}
