package grant

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

const (
	agentID    = "spiffe://example.org/nhid/agent/join_token/abc"
	workloadID = "spiffe://example.org/ci/builder"
)

// waitTimeout bounds every wait for something asynchronous.
const waitTimeout = 10 * time.Second

// testPolicy is the policy most tests decide with. Rules are tried in
// order; the first match decides.
const testPolicy = `version: 1
rules:
  - name: busy
    when: usage.last_minute >= 3 || usage.active >= 2
    effect: deny
    reason: too many grants
  - name: low-reputation
    when: subject.reputation < 300
    effect: deny
    reason: reputation too low
  - name: critical-needs-two
    when: request.resource.startsWith("critical/")
    effect: require_approval
    critical: true
  - name: prod-needs-approval
    when: request.resource.startsWith("prod/")
    effect: require_approval
  - name: admin-only
    when: request.resource == "admin-only"
    effect: allow
    scopes: '["admin"]'
  - name: ci-short
    when: subject.purpose == "ci" && request.action == "short"
    effect: allow
    max_ttl: 2m
  - name: ci-read-only
    when: subject.purpose == "ci" && request.action == "read"
    effect: allow
    scopes: '["repo:read"]'
  - name: ci
    when: subject.purpose == "ci" && "join_token:abc" in subject.node_selectors
    effect: allow
`

// harness is the grant service over a real bolt store, CA and policy
// engine, on a fake clock.
type harness struct {
	t     testing.TB
	store *bolt.Store
	ca    *ca.CA
	clock *clock.Fake
	svc   *Service
	logs  *syncBuffer
	entry *typesv1.Entry
	node  *typesv1.Node
}

type harnessOpt func(*Config)

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: discard(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: st, ca: authority, clock: clk, logs: &syncBuffer{}}
	cfg := Config{
		TrustDomain: td, Store: st, Policy: h.policy(testPolicy), Signer: authority,
		Log: slog.New(slog.NewJSONHandler(h.logs, nil)), Clock: clk,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if h.svc, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	h.entry = &typesv1.Entry{
		Id: "entry-1", SpiffeId: workloadID, ParentId: agentID, Selectors: []string{"unix:uid:1000"},
		Purpose: "ci", Owner: "ana@example.org", ScopeCeiling: []string{"deploy", "repo:read", "repo:write"},
	}
	h.node = &typesv1.Node{SpiffeId: agentID, Selectors: []string{"join_token:abc"}, Status: typesv1.NodeStatus_NODE_STATUS_ACTIVE}
	return h
}

// policy writes src to a file and loads it with the real engine.
func (h *harness) policy(src string) *policy.Engine {
	h.t.Helper()
	path := filepath.Join(h.t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		h.t.Fatal(err)
	}
	e, err := policy.New(policy.Config{Path: path, Log: discard(), Clock: h.clock})
	if err != nil {
		h.t.Fatalf("policy: %v", err)
	}
	return e
}

// run runs the service until the test ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
}

func request(scopes ...string) *grantv1.GrantRequest {
	return &grantv1.GrantRequest{Scopes: scopes, Resource: "repo/nhid", Action: "clone", Reason: "build release 1.2", Ttl: 600}
}

// request asks for r through the harness's entry and node.
func (h *harness) request(r *grantv1.GrantRequest) (Result, error) {
	return h.svc.Request(context.Background(), Request{Entry: h.entry, Node: h.node, Grant: r})
}

func (h *harness) mustRequest(r *grantv1.GrantRequest) Result {
	h.t.Helper()
	res, err := h.request(r)
	if err != nil {
		h.t.Fatalf("Request: %v", err)
	}
	return res
}

// grants lists every stored grant.
func (h *harness) grants() []*typesv1.Grant {
	h.t.Helper()
	all, _, err := h.store.ListGrants(context.Background(), store.ListGrantsRequest{})
	if err != nil {
		h.t.Fatal(err)
	}
	return all
}

// verify checks token against the CA's JWT keys and returns its header and
// claims.
func (h *harness) verify(token string) (jose.Header, map[string]any) {
	h.t.Helper()
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
	if err != nil {
		h.t.Fatalf("parse token: %v", err)
	}
	key, ok := h.ca.JWTAuthorities()[parsed.Headers[0].KeyID]
	if !ok {
		h.t.Fatalf("token kid %q is not a JWT authority", parsed.Headers[0].KeyID)
	}
	var claims map[string]any
	if err := parsed.Claims(key, &claims); err != nil {
		h.t.Fatalf("verify token: %v", err)
	}
	return parsed.Headers[0], claims
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
