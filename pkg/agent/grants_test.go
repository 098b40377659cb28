package agent_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/nhid/nhid/attestors/all"
	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/server"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// grantPolicy allows deploy scopes and sends deletes to a human.
const grantPolicy = `version: 1
rules:
  - name: deletes-need-approval
    when: request.action == "delete"
    effect: require_approval
    reason: deletes need a human
  - name: deploys
    when: request.scopes.exists(s, s.startsWith("deploy:"))
    effect: allow
    scopes: request.scopes.filter(s, s.startsWith("deploy:"))
    max_ttl: 10m
`

// startGrantServer runs a server with grantPolicy, as startServer does
// without one.
func startGrantServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(grantPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		TrustDomain: td, DataDir: filepath.Join(dir, "data"), BindAddress: "127.0.0.1:0",
		AdminSocket: filepath.Join(shortTempDir(t), "server.sock"),
		NodeVerifiers: func(d server.VerifierDeps) ([]attestor.NodeVerifier, error) {
			return all.NodeVerifiers(all.NodeVerifierConfig{TrustDomain: d.TrustDomain, Tokens: d.Store, Clock: d.Clock, Log: d.Log})
		},
		Policy: server.PolicyConfig{Path: policyPath},
		Log:    testLogger(t, "server"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server Run: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("server not ready within 10s")
	}
	admin, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, admin: admin}
	ts.stop = func() { _ = admin.Close(); cancel(); <-done }
	t.Cleanup(ts.stop)
	return ts
}

// grantsClient calls the agent's Grant API as this process, with the
// Workload Endpoint's security header.
func grantsClient(t *testing.T, a *agent.Agent) (grantv1.GrantsClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+a.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	t.Cleanup(cancel)
	return grantv1.NewGrantsClient(conn), metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// grantSetup is a server with grantPolicy, an agent, and an entry for this
// process with a deploy scope ceiling.
func grantSetup(t *testing.T) (*testServer, *testAgent, *typesv1.Entry) {
	t.Helper()
	srv := startGrantServer(t)
	token, agentID := srv.token(t)
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	resp, err := srv.entries().CreateEntry(context.Background(), &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId:     "spiffe://example.org/deployer",
		ParentId:     agentID,
		Selectors:    []string{"unix:uid:" + strconv.Itoa(os.Getuid())},
		Purpose:      "deploys the web app",
		Owner:        "ana@example.org",
		ScopeCeiling: []string{"deploy:staging", "logs:read"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, a, resp.GetEntry()
}

func TestGrantAPI_GrantsThroughTheAgentAndReleases(t *testing.T) {
	srv, a, entry := grantSetup(t)
	client, ctx := grantsClient(t, a.Agent)

	msgs := requestUntilServed(t, ctx, client, &grantv1.GrantRequest{
		Scopes: []string{"deploy:staging", "deploy:prod"}, Resource: "app/web", Action: "deploy", Reason: "ship 1.2", Ttl: 300,
	})
	if len(msgs) != 1 || msgs[0].GetState() != grantv1.GrantState_GRANT_STATE_GRANTED {
		t.Fatalf("messages %v, want one GRANTED", msgs)
	}
	st := msgs[0]
	if diff := cmp.Diff([]string{"deploy:staging"}, st.GetScopes()); diff != "" {
		t.Fatalf("granted scopes: deploy:prod is outside the ceiling (-want +got):\n%s", diff)
	}
	claims := verifyTxnToken(t, srv, st.GetToken())
	want := map[string]any{"sub": entry.GetSpiffeId(), "txn": st.GetGrantId(), "scope": "deploy:staging",
		"purpose": "deploys the web app", "owner": "ana@example.org"}
	tctx, _ := claims["tctx"].(map[string]any)
	got := map[string]any{"sub": claims["sub"], "txn": claims["txn"], "scope": claims["scope"],
		"purpose": tctx["purpose"], "owner": tctx["owner"]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("token claims (-want +got):\n%s", diff)
	}

	list, err := client.List(ctx, &grantv1.ListRequest{})
	if err != nil || len(list.GetGrants()) != 1 || list.GetGrants()[0].GetGrantId() != st.GetGrantId() {
		t.Fatalf("List = %v, %v; want the grant", list, err)
	}
	if _, err := client.Release(ctx, &grantv1.ReleaseRequest{GrantId: st.GetGrantId()}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	g, err := adminv1.NewGrantServiceClient(srv.admin).GetGrant(ctx, &adminv1.GetGrantRequest{Id: st.GetGrantId()})
	if err != nil || g.GetGrant().GetStatus() != typesv1.GrantStatus_GRANT_STATUS_RELEASED {
		t.Fatalf("grant after Release: %v, %v; want RELEASED", g.GetGrant().GetStatus(), err)
	}
}

// TestGrantAPI_PendingRequestSurvivesAgentSVIDRenewal: a renewal replaces
// the agent's connection, but a request waiting for a human stays on the
// old one and still gets its outcome.
func TestGrantAPI_PendingRequestSurvivesAgentSVIDRenewal(t *testing.T) {
	srv, a, _ := grantSetup(t)
	client, ctx := grantsClient(t, a.Agent)
	stream, first := pendingRequest(t, ctx, client)

	nodes := adminv1.NewNodeServiceClient(srv.admin)
	before := nodeSerial(t, nodes)
	agent.RenewNow(a.Agent)
	// The renewed SVID is in use, so the connection was replaced, once the
	// server has retired the previous serial; List calls use the new one.
	eventuallyTrue(t, "the agent uses its renewed SVID", func() bool {
		_, _ = client.List(ctx, &grantv1.ListRequest{})
		n, err := nodes.GetNode(ctx, &adminv1.GetNodeRequest{SpiffeId: before.GetSpiffeId()})
		return err == nil && n.GetNode().GetSvidSerial() != before.GetSvidSerial() && n.GetNode().GetPreviousSvidSerial() == ""
	})

	if _, err := adminv1.NewGrantServiceClient(srv.admin).RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: first.GetGrantId(), Reason: "not today"}); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	last, err := stream.Recv()
	if err != nil {
		t.Fatalf("the pending request's stream ended with %v, want its outcome", err)
	}
	if last.GetState() != grantv1.GrantState_GRANT_STATE_DENIED || last.GetGrantId() != first.GetGrantId() {
		t.Fatalf("outcome %v, want DENIED for %s", last, first.GetGrantId())
	}
}

// pendingRequest asks for a delete, which waits for a human.
func pendingRequest(t *testing.T, ctx context.Context, client grantv1.GrantsClient) (grpc.ServerStreamingClient[grantv1.GrantStatus], *grantv1.GrantStatus) {
	t.Helper()
	var (
		stream grpc.ServerStreamingClient[grantv1.GrantStatus]
		first  *grantv1.GrantStatus
	)
	eventuallyTrue(t, "the request waits for approval", func() bool {
		var err error
		stream, err = client.Request(ctx, &grantv1.GrantRequest{Scopes: []string{"deploy:staging"}, Action: "delete", Reason: "drop old release", Ttl: 60})
		if err != nil {
			return false
		}
		first, err = stream.Recv()
		return err == nil && first.GetState() == grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL
	})
	return stream, first
}

// requestUntilServed retries while the entry has not reached the agent.
func requestUntilServed(t *testing.T, ctx context.Context, client grantv1.GrantsClient, req *grantv1.GrantRequest) []*grantv1.GrantStatus {
	t.Helper()
	var msgs []*grantv1.GrantStatus
	eventuallyTrue(t, "the grant request is served", func() bool {
		msgs = nil
		stream, err := client.Request(ctx, req)
		if err != nil {
			return false
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				return len(msgs) > 0
			}
			msgs = append(msgs, m)
		}
	})
	return msgs
}

// verifyTxnToken checks the token's signature against the trust domain's
// JWT bundle and its typ, and returns its claims.
func verifyTxnToken(t *testing.T, srv *testServer, token string) map[string]any {
	t.Helper()
	b, err := adminv1.NewBundleServiceClient(srv.admin).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	if typ := parsed.Headers[0].ExtraHeaders[jose.HeaderType]; typ != "txntoken+jwt" {
		t.Fatalf("typ %v, want txntoken+jwt", typ)
	}
	for _, ja := range b.GetBundle().GetJwtAuthorities() {
		if ja.GetKeyId() != parsed.Headers[0].KeyID {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(ja.GetPublicKey())
		if err != nil {
			t.Fatal(err)
		}
		claims := map[string]any{}
		if err := parsed.Claims(pub, &claims); err != nil {
			t.Fatalf("token signature: %v", err)
		}
		return claims
	}
	t.Fatalf("no JWT authority %q in the bundle", parsed.Headers[0].KeyID)
	return nil
}

func nodeSerial(t *testing.T, nodes adminv1.NodeServiceClient) *typesv1.Node {
	t.Helper()
	resp, err := nodes.ListNodes(context.Background(), &adminv1.ListNodesRequest{})
	if err != nil || len(resp.GetNodes()) != 1 {
		t.Fatalf("ListNodes: %v, %v", resp, err)
	}
	return resp.GetNodes()[0]
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, waitTimeout)
}
