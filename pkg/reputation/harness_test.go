package reputation

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/store/bolt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	subject = "spiffe://example.org/agent/deployer"
	owner   = "ana@example.org"
)

// recorder keeps what the service hands its notifier, audit log and
// revoker.
type recorder struct {
	mu       sync.Mutex
	notes    []notify.Notification
	audits   []audit.Event
	revokes  []string
	revokeN  int
	revokeEr error
}

func (r *recorder) Notify(_ context.Context, n notify.Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, n)
}

func (r *recorder) Record(_ context.Context, ev audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.audits = append(r.audits, ev)
}

func (r *recorder) RevokeSubject(_ context.Context, spiffeID, reason string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revokes = append(r.revokes, spiffeID+": "+reason)
	return r.revokeN, r.revokeEr
}

func (r *recorder) notifications() []notify.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Notification(nil), r.notes...)
}

func (r *recorder) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.audits {
		out = append(out, a.Action)
	}
	return out
}

// harness is a service over a real bbolt store with a fake clock.
type harness struct {
	t     testing.TB
	store *bolt.Store
	clock *clock.Fake
	rec   *recorder
	svc   *Service
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "nhid.db"), bolt.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := &harness{t: t, store: st, clock: clock.NewFake(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)), rec: &recorder{}}
	cfg := Config{Store: st, Clock: h.clock, Notifier: h.rec, Audit: h.rec}
	if mod != nil {
		mod(&cfg)
	}
	h.svc, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.svc.SetRevoker(h.rec)
	return h
}

// observe applies one event of kind to subject and fails on error.
func (h *harness) observe(kind Kind) Standing {
	h.t.Helper()
	st, err := h.svc.Observe(context.Background(), Event{SPIFFEID: subject, Owner: owner, Kind: kind, Reason: "test", Reporter: "server"})
	if err != nil {
		h.t.Fatalf("Observe(%s): %v", kind, err)
	}
	return st
}

func (h *harness) standing() Standing {
	h.t.Helper()
	st, err := h.svc.Standing(context.Background(), subject)
	if err != nil {
		h.t.Fatalf("Standing: %v", err)
	}
	return st
}
