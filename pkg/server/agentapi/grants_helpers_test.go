package agentapi

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// grantPolicy is the policy of the grant tests.
const grantPolicy = `version: 1
rules:
  - name: prod-needs-approval
    when: request.resource.startsWith("prod/")
    effect: require_approval
    reason: production needs a second pair of eyes
  - name: ci
    when: subject.purpose == "ci"
    effect: allow
`

// grantHarness is the agent API harness with the grant service wired in:
// the real grant.Service and policy engine over the harness's store and CA.
type grantHarness struct {
	*harness
	grants *grant.Service
}

// newGrantHarness builds the harness; opts adjust the grant service's
// configuration.
func newGrantHarness(t testing.TB, opts ...func(*grant.Config)) *grantHarness {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(grantPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(policy.Config{Path: path, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	gh := &grantHarness{}
	h := newHarness(t, withConfig(func(cfg *Config) {
		gc := grant.Config{
			TrustDomain: td, Store: cfg.Store.(*bolt.Store), Policy: engine, Signer: cfg.CA.(*ca.CA), Log: discard(),
		}
		for _, o := range opts {
			o(&gc)
		}
		svc, err := grant.New(gc)
		if err != nil {
			t.Fatal(err)
		}
		gh.grants, cfg.Grants = svc, svc
	}))
	gh.harness = h
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gh.grants.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("grant.Service.Run: %v", err)
		}
	})
	return gh
}

// grantClient is an AgentGrantService client presenting sv (none if nil).
func (h *grantHarness) grantClient(sv *x509svid.SVID) agentv1.AgentGrantServiceClient {
	h.t.Helper()
	auth := tlsconfig.AuthorizeID(agentid.Server(td))
	cfg := tlsconfig.TLSClientConfig(h.bundle, auth)
	if sv != nil {
		cfg = tlsconfig.MTLSClientConfig(sv, h.bundle, auth)
	}
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return agentv1.NewAgentGrantServiceClient(conn)
}

// ciEntry is a workload entry under parent that the grant policy allows.
func ciEntry(path, parent string) *typesv1.Entry {
	e := workload(path, parent)
	e.Purpose, e.Owner = "ci", "ana@example.org"
	e.ScopeCeiling = []string{"deploy", "repo:read", "repo:write"}
	return e
}

func grantRequest(scopes ...string) *grantv1.GrantRequest {
	return &grantv1.GrantRequest{Scopes: scopes, Resource: "repo/nhid", Action: "clone", Reason: "build release 1.2", Ttl: 300}
}

// requestGrant runs RequestGrant and collects every status until the
// stream ends; err is the stream's final error (nil on a clean end).
func requestGrant(t testing.TB, c agentv1.AgentGrantServiceClient, entryID string, r *grantv1.GrantRequest) ([]*grantv1.GrantStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := c.RequestGrant(ctx, &agentv1.AgentGrantRequest{EntryId: entryID, Request: r})
	if err != nil {
		return nil, err
	}
	var out []*grantv1.GrantStatus
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// storedGrants lists every grant in the store.
func (h *grantHarness) storedGrants() []*typesv1.Grant {
	h.t.Helper()
	all, _, err := h.store.ListGrants(context.Background(), store.ListGrantsRequest{})
	if err != nil {
		h.t.Fatal(err)
	}
	return all
}
