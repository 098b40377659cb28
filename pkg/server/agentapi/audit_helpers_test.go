package agentapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// recorder is an audit.Recorder that keeps every event: the sink the
// tests read the service's records from.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Record(_ context.Context, ev audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// of returns the events of action so far.
func (r *recorder) of(action string) []audit.Event {
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

// wait waits until there are at least n events of action and returns them:
// some records are written after the call's answer has gone out.
func (r *recorder) wait(t testing.TB, action string, n int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if got := r.of(action); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s records within %s, want %d: %+v", len(r.of(action)), action, waitTimeout, n, r.of(action))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// json is every event as JSON, for checks that nothing secret got in.
func (r *recorder) json(t testing.TB) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := json.Marshal(r.events)
	if err != nil {
		t.Fatalf("audit events do not marshal: %v", err)
	}
	return string(b)
}

// observed is a reputation.Tracker that keeps the events it is told of.
type observed struct {
	mu     sync.Mutex
	events []reputation.Event
}

func (o *observed) Standing(context.Context, string) (reputation.Standing, error) {
	return reputation.Standing{Score: 500}, nil
}

func (o *observed) Observe(_ context.Context, ev reputation.Event) (reputation.Standing, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
	return reputation.Standing{Score: 500}, nil
}

func (o *observed) all() []reputation.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]reputation.Event(nil), o.events...)
}

// withAudit records the service's audit events in rec and its reputation
// events in rep.
func withAudit(rec *recorder, rep *observed) harnessOpt {
	return withConfig(func(c *Config) {
		c.Audit = rec
		if rep != nil {
			c.Reputation = rep
		}
	})
}

// eventsClient is an AgentGrantService client presenting a's SVID.
func (h *harness) eventsClient(a *agent) agentv1.AgentGrantServiceClient {
	h.t.Helper()
	cfg := tlsconfig.MTLSClientConfig(a.svid, h.bundle, tlsconfig.AuthorizeID(agentid.Server(td)))
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return agentv1.NewAgentGrantServiceClient(conn)
}

// detail reads a record's detail as a string, whatever its type.
func detail(ev audit.Event, key string) string {
	b, _ := json.Marshal(ev.Details[key])
	return strings.Trim(string(b), `"`)
}

// leafOf parses the leaf of a chain the server returned.
func leafOf(t testing.TB, chain [][]byte) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// anonymousGrantClient is an AgentGrantService client without a client
// certificate.
func (h *harness) anonymousGrantClient() agentv1.AgentGrantServiceClient {
	h.t.Helper()
	cfg := tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(agentid.Server(td)))
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return agentv1.NewAgentGrantServiceClient(conn)
}
