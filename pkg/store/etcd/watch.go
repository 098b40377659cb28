package etcd

import (
	"context"
	"errors"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/fanout"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Watch streams every entry, node and bundle change committed after it
// returns, by any server sharing the cluster; see store.Watcher.
func (s *Store) Watch(ctx context.Context) (<-chan store.Event, error) {
	return s.hub.subscribe(ctx, "watch", false)
}

// WatchGrants streams every grant change committed after it returns; see
// store.GrantStore.
func (s *Store) WatchGrants(ctx context.Context) (<-chan store.Event, error) {
	return s.hub.subscribe(ctx, "watch grants", true)
}

// hub runs one etcd watch over every record of the store and fans its
// events out to the local watchers, so that a thousand Sync streams cost
// etcd one watch. It starts with the first watcher. If the etcd watch
// fails in a way that loses events (its revision was compacted), every
// watcher is closed, which tells its owner to read the state again, and
// the watch starts over from the current revision.
type hub struct {
	s *Store

	mu   sync.Mutex
	subs map[*fanout.Subscriber]struct{}
	// positioned is closed once the etcd watch's start revision has been
	// read: a watcher registered after that misses nothing committed after
	// it registered. A restart replaces it with an open channel.
	positioned chan struct{}
	started    bool
	closed     bool
	stop       context.CancelFunc
	ctx        context.Context
}

// restartBackoff paces the attempts to start the etcd watch again.
const restartBackoff = 500 * time.Millisecond

func newHub(s *Store) *hub {
	ctx, stop := context.WithCancel(context.Background())
	return &hub{s: s, subs: make(map[*fanout.Subscriber]struct{}), positioned: make(chan struct{}), ctx: ctx, stop: stop}
}

// subscribe registers a watcher once the etcd watch is positioned.
func (h *hub) subscribe(ctx context.Context, op string, grants bool) (<-chan store.Event, error) {
	if err := h.s.check(ctx, op); err != nil {
		return nil, err
	}
	sub := fanout.New(grants, h.s.cfg.WatchBuffer)
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", op, store.ErrClosed)
		}
		if !h.started {
			h.started = true
			h.s.wg.Add(1)
			go h.run()
		}
		pos := h.positioned
		select {
		case <-pos:
			h.subs[sub] = struct{}{}
			h.mu.Unlock()
			h.s.wg.Add(1)
			go h.serve(ctx, sub)
			return sub.C(), nil
		default:
		}
		h.mu.Unlock()
		select {
		case <-pos:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		case <-h.ctx.Done():
			return nil, fmt.Errorf("%s: %w", op, store.ErrClosed)
		}
	}
}

// serve forwards sub's events until its context or the store ends or it
// is dropped, then removes it.
func (h *hub) serve(ctx context.Context, sub *fanout.Subscriber) {
	defer h.s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.ctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	sub.Forward(ctx)
	h.mu.Lock()
	h.removeLocked(sub)
	h.mu.Unlock()
}

// removeLocked forgets sub and drops it, which ends its forwarding.
func (h *hub) removeLocked(sub *fanout.Subscriber) {
	delete(h.subs, sub)
	sub.Drop()
}

// close ends the etcd watch and every watcher.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for sub := range h.subs {
		h.removeLocked(sub)
	}
	h.mu.Unlock()
	h.stop()
}

// run positions and runs the etcd watch until the store closes, starting
// over whenever it fails.
func (h *hub) run() {
	defer h.s.wg.Done()
	for {
		from, err := h.position()
		if err != nil {
			return // closed
		}
		err = h.stream(from)
		if h.ctx.Err() != nil {
			return
		}
		h.s.log.Warn("etcd store watch lost events; watchers must read the state again",
			telemetry.Revision, from, telemetry.Error, err.Error())
		h.mu.Lock()
		for sub := range h.subs {
			h.removeLocked(sub)
		}
		h.positioned = make(chan struct{})
		h.mu.Unlock()
	}
}

// position reads the current etcd revision, retrying until etcd answers
// or the store closes, and opens the way for watchers: the watch will
// start right after it.
func (h *hub) position() (int64, error) {
	for {
		resp, err := h.s.get(h.ctx, "start watch", h.s.keys.revision())
		if err == nil {
			h.mu.Lock()
			close(h.positioned)
			h.mu.Unlock()
			return resp.Header.Revision + 1, nil
		}
		if h.ctx.Err() != nil {
			return 0, err
		}
		h.s.log.Warn("etcd store watch cannot start; retrying", telemetry.Error, err.Error())
		select {
		case <-h.ctx.Done():
			return 0, h.ctx.Err()
		case <-time.After(restartBackoff):
		}
	}
}

// errWatchEnded: the etcd watch channel closed without a reason.
var errWatchEnded = errors.New("etcd watch ended")

// stream runs the etcd watch from revision from and publishes its events
// until it fails. etcd's client resumes a watch broken by a lost member on
// another member by itself, so only lost history ends it.
func (h *hub) stream(from int64) error {
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	p := h.s.keys.under(prefixRecords)
	wch := h.s.client.Watch(ctx, p, clientv3.WithRange(prefixEnd(p)), clientv3.WithPrevKV(), clientv3.WithRev(from))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.Canceled {
			return fmt.Errorf("etcd watch cancelled at compact revision %d", resp.CompactRevision)
		}
		if events := h.s.decodeEvents(resp.Events); len(events) > 0 {
			h.publish(events)
		}
	}
	return errWatchEnded
}

// publish hands events to every watcher without blocking: a watcher that
// falls WatchBuffer events behind is dropped, so that one slow consumer
// can never stall the others.
func (h *hub) publish(events []store.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if !sub.Offer(events) {
			h.s.log.Warn("store watcher fell behind and was dropped",
				telemetry.Revision, events[len(events)-1].Revision, "buffer", h.s.cfg.WatchBuffer)
			h.removeLocked(sub)
		}
	}
}
