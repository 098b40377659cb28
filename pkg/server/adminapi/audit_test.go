package adminapi

import (
	"context"
	"slices"
	"sync"

	"github.com/nhid/nhid/pkg/audit"
)

// recorder is an audit.Recorder that keeps every event, for tests to read
// the service's records (changes_audit_test.go, approvals_test.go).
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Record(_ context.Context, ev audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// all returns the events recorded so far, oldest first.
func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}
