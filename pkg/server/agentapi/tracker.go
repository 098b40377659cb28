package agentapi

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// tracker remembers the store revisions at which the things a Sync resume
// cannot see changed: alias entries (a deleted alias leaves only a tombstone
// id, so the entries it authorised would silently stay on the agent) and a
// node's own selectors (which decide the aliases that apply to it). A resume
// is only safe from a revision at or after which every such change is known.
type tracker struct {
	mu sync.Mutex
	// knownFrom: every relevant change with a higher revision was seen.
	knownFrom int64
	// aliasChangedAt is the last revision at which any alias entry changed.
	aliasChangedAt int64
	// nodeChangedAt is, per node, the last revision at which its selectors
	// or existence changed.
	nodeChangedAt map[string]int64
	// observed is the revision of the last event seen (or knownFrom):
	// with a store several servers share, an agent may resume from a
	// revision another server sent it before this server's watch caught
	// up, and the checks above are only complete up to observed.
	observed int64
	// progress is closed and replaced whenever observed moves.
	progress chan struct{}

	subscribed     chan struct{}
	subscribedOnce sync.Once
}

func newTracker() *tracker {
	return &tracker{
		knownFrom:     math.MaxInt64,
		nodeChangedAt: make(map[string]int64),
		subscribed:    make(chan struct{}),
		progress:      make(chan struct{}),
	}
}

// waitObserved waits, for at most maxWait, until every change up to rev
// has been observed. Every change that moves the revision is an event,
// so seeing one at rev or later means seeing all before it.
func (t *tracker) waitObserved(ctx context.Context, rev int64, maxWait time.Duration) bool {
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		t.mu.Lock()
		ok, progress := t.observed >= rev, t.progress
		t.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-progress:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// advanceLocked records that every change up to rev was observed.
func (t *tracker) advanceLocked(rev int64) {
	if rev > t.observed {
		t.observed = rev
		close(t.progress)
		t.progress = make(chan struct{})
	}
}

// resumeSafe reports whether a resume from since can be trusted for nodeID.
func (t *tracker) resumeSafe(since int64, nodeID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return since >= t.knownFrom && t.aliasChangedAt <= since && t.nodeChangedAt[nodeID] <= since
}

func (t *tracker) run(ctx context.Context, st Store, td spiffeid.TrustDomain, log *slog.Logger) error {
	for {
		events, err := st.Watch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agentapi change tracker: watch store: %w", err)
		}
		rev, err := st.Revision(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agentapi change tracker: read revision: %w", err)
		}
		t.setKnownFrom(rev)
		t.subscribedOnce.Do(func() { close(t.subscribed) })
		for ev := range events {
			t.observe(td, ev)
		}
		if ctx.Err() != nil {
			return nil
		}
		// The watcher fell behind: what happened meanwhile is unknown, so
		// resumes from before the new subscription fall back to snapshots.
		log.Warn("change tracker fell behind the store; resubscribing", telemetry.Revision, rev)
	}
}

func (t *tracker) setKnownFrom(rev int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.knownFrom == math.MaxInt64 || rev > t.knownFrom {
		t.knownFrom = rev
	}
	t.advanceLocked(rev)
}

func (t *tracker) observe(td spiffeid.TrustDomain, ev store.Event) {
	defer func() {
		t.mu.Lock()
		t.advanceLocked(ev.Revision)
		t.mu.Unlock()
	}()
	switch ev.Kind {
	case store.EventEntry:
		if !entry.IsAlias(td, ev.Entry) && !entry.IsAlias(td, ev.PrevEntry) {
			return
		}
		t.mu.Lock()
		t.aliasChangedAt = max(t.aliasChangedAt, ev.Revision)
		t.mu.Unlock()
	case store.EventNode:
		if !nodeSelectorsChanged(ev.PrevNode, ev.Node) {
			return
		}
		id := ev.Node.GetSpiffeId()
		if id == "" {
			id = ev.PrevNode.GetSpiffeId()
		}
		t.mu.Lock()
		t.nodeChangedAt[id] = max(t.nodeChangedAt[id], ev.Revision)
		t.mu.Unlock()
	}
}

// nodeSelectorsChanged reports whether the change from prev to cur can
// change the set of entries authorised for the node.
func nodeSelectorsChanged(prev, cur *typesv1.Node) bool {
	if prev == nil || cur == nil {
		return true
	}
	return !slices.Equal(sortedCopy(prev.GetSelectors()), sortedCopy(cur.GetSelectors()))
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
