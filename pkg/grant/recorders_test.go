package grant

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/reputation"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// recorders collects what the service hands the audit log and the
// notifier: their real implementations are other packages' and write
// asynchronously; here the records are checked as they are handed over.
type recorders struct {
	mu            sync.Mutex
	events        []audit.Event
	notifications []notify.Notification
}

func (r *recorders) Record(_ context.Context, ev audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorders) Notify(_ context.Context, n notify.Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notifications = append(r.notifications, n)
}

// audited returns the audit events of action, in order.
func (r *recorders) audited(action string) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []audit.Event
	for _, ev := range r.events {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

func (r *recorders) notified() []notify.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Notification(nil), r.notifications...)
}

// failingTracker is a reputation tracker whose store is down.
type failingTracker struct{}

var errTrackerDown = errors.New("reputation store unavailable")

func (failingTracker) Standing(context.Context, string) (reputation.Standing, error) {
	return reputation.Standing{}, errTrackerDown
}

func (failingTracker) Observe(context.Context, reputation.Event) (reputation.Standing, error) {
	return reputation.Standing{}, errTrackerDown
}

// withRecorders sends the service's audit records and notifications to r.
func withRecorders(r *recorders) harnessOpt {
	return func(c *Config) { c.Audit, c.Notifier = r, r }
}

// withPolicy decides with src instead of testPolicy.
func withPolicy(t testing.TB, src string) harnessOpt {
	return func(c *Config) {
		c.Policy = (&harness{t: t, clock: c.Clock.(*clock.Fake)}).policy(src)
	}
}

// storeEntries stores the harness's entry and the others given, so that
// the approver rule can find them.
func (h *harness) storeEntries(others ...*typesv1.Entry) {
	h.t.Helper()
	_, errs, err := h.store.CreateEntries(context.Background(), append([]*typesv1.Entry{h.entry}, others...))
	if err = errors.Join(append(errs, err)...); err != nil {
		h.t.Fatalf("store entries: %v", err)
	}
}
