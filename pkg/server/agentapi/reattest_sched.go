package agentapi

import (
	"cmp"
	"container/heap"
	"context"
	"sync"
	"time"
)

// Continuous attestation bounds.
const (
	// reattestTimeout bounds one round: the challenge, the agent's answer
	// and the verdict.
	reattestTimeout = 60 * time.Second
	// maxConcurrentReattests bounds the rounds in progress; more wait.
	maxConcurrentReattests = 32
	// reattestRetry is how soon a round that got no verdict (the stream
	// broke, the agent could not answer, the server failed) is tried
	// again, at most: never later than the interval.
	reattestRetry = 30 * time.Second
	// minOverdueGrace is the least time past its interval a node has to
	// pass an attestation before it is overdue.
	minOverdueGrace = 30 * time.Second
	// maxSweepEvery bounds the period of the overdue sweep.
	maxSweepEvery = time.Minute
)

// overdueGrace is how long past its interval a node may go without a
// passing attestation: half the interval, and at least 30 s, so a round
// that needs its retry does not make a healthy node untrusted.
func overdueGrace(interval time.Duration) time.Duration {
	return max(interval/2, minOverdueGrace)
}

// firstDue is when a node whose stream just opened is first challenged:
// when its interval since the last passing attestation ends, or now.
func (s *Service) firstDue(verifiedAt, attestedAt int64, interval time.Duration) time.Time {
	due, now := time.Unix(max(verifiedAt, attestedAt), 0).Add(interval), s.clock.Now()
	if due.Before(now) {
		return now
	}
	return due
}

// scheduler runs the continuous attestation rounds of every connected
// node from one goroutine and a queue ordered by due time, whatever the
// number of nodes: no per-node timers or loops. Rounds run on at most
// maxConcurrentReattests goroutines.
type scheduler struct {
	s     *Service
	mu    sync.Mutex
	queue dueQueue
	wake  chan struct{}
	slots chan struct{}
	// now is the scheduler's time; a test seam.
	now func() time.Time
}

func newScheduler(s *Service) *scheduler {
	return &scheduler{
		s: s, wake: make(chan struct{}, 1), slots: make(chan struct{}, maxConcurrentReattests),
		now: s.clock.Now,
	}
}

// schedule queues a round for conn at at.
func (q *scheduler) schedule(conn *reattestConn, at time.Time) {
	q.mu.Lock()
	heap.Push(&q.queue, &dueItem{at: at, conn: conn})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run starts due rounds and sweeps for overdue nodes until ctx ends, then
// waits for the rounds in progress.
func (q *scheduler) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	nextSweep := q.now()
	for {
		now := q.now()
		if !now.Before(nextSweep) {
			q.s.sweepOverdue(ctx)
			nextSweep = now.Add(cmp.Or(q.s.sweepEvery, maxSweepEvery))
		}
		for _, conn := range q.popDue(now) {
			select {
			case q.slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Go(func() {
				defer func() { <-q.slots }()
				q.s.reattestRound(ctx, conn)
			})
		}
		timer := time.NewTimer(q.untilNext(now, nextSweep))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-q.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// popDue removes the rounds due at now, skipping streams that ended.
func (q *scheduler) popDue(now time.Time) []*reattestConn {
	q.mu.Lock()
	defer q.mu.Unlock()
	var due []*reattestConn
	for q.queue.Len() > 0 && !q.queue[0].at.After(now) {
		it := heap.Pop(&q.queue).(*dueItem)
		if it.conn.live() {
			due = append(due, it.conn)
		}
	}
	return due
}

// untilNext is the wait until the next round or sweep.
func (q *scheduler) untilNext(now, nextSweep time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	next := nextSweep
	if q.queue.Len() > 0 && q.queue[0].at.Before(next) {
		next = q.queue[0].at
	}
	return max(next.Sub(now), time.Millisecond)
}

// dueItem is one queued round.
type dueItem struct {
	at   time.Time
	conn *reattestConn
}

// dueQueue is a min-heap of rounds by due time.
type dueQueue []*dueItem

func (d dueQueue) Len() int           { return len(d) }
func (d dueQueue) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d dueQueue) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *dueQueue) Push(x any)        { *d = append(*d, x.(*dueItem)) }
func (d *dueQueue) Pop() any {
	old := *d
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	return it
}
