package bolt

import (
	"context"
	"fmt"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// watcher is one Watch subscription.
type watcher struct {
	ch chan store.Event
}

// Watch streams every entry, node and bundle change committed after it
// returns. Registration happens under the write lock, so a change is either
// committed before Watch returns (and not delivered) or delivered.
func (s *Store) Watch(ctx context.Context) (<-chan store.Event, error) {
	if err := s.check(ctx, "watch"); err != nil {
		return nil, err
	}
	w := &watcher{ch: make(chan store.Event, s.watchBuffer)}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("watch: %w", store.ErrClosed)
	}
	s.watchers[w] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.mu.Lock()
		s.removeWatcherLocked(w)
		s.mu.Unlock()
	}()
	return w.ch, nil
}

// publishLocked hands committed events to every watcher without blocking:
// a watcher whose buffer is full is dropped, so that one slow consumer can
// never stall writes. The caller holds s.mu.
func (s *Store) publishLocked(events []store.Event) {
	if len(events) == 0 {
		return
	}
	for w := range s.watchers {
		for _, ev := range events {
			select {
			case w.ch <- ev:
				continue
			default:
			}
			s.log.Warn("store watcher fell behind and was dropped",
				telemetry.Revision, ev.Revision, "buffer", cap(w.ch))
			s.removeWatcherLocked(w)
			break
		}
	}
}

// removeWatcherLocked closes w's channel once. The caller holds s.mu.
func (s *Store) removeWatcherLocked(w *watcher) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	close(w.ch)
}
