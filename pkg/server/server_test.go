package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const waitTimeout = 10 * time.Second

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testConfig(t testing.TB, dataDir, socketDir string) Config {
	t.Helper()
	return Config{
		TrustDomain:   td,
		DataDir:       dataDir,
		BindAddress:   "127.0.0.1:0",
		AdminSocket:   filepath.Join(socketDir, "nhid", "server.sock"),
		HealthAddress: "127.0.0.1:0",
		NodeVerifiers: func(d VerifierDeps) ([]attestor.NodeVerifier, error) {
			v, err := jointoken.NewVerifier(jointoken.VerifierConfig{TrustDomain: d.TrustDomain, Tokens: d.Store, Clock: d.Clock, Log: d.Log})
			return []attestor.NodeVerifier{v}, err
		},
	}
}

// start runs a Server until the returned stop is called.
func start(t testing.TB, cfg Config) (*Server, func()) {
	t.Helper()
	srv, err := New(cfg)
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
		t.Fatalf("Run: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("server not ready within 10s")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * waitTimeout):
			t.Fatal("Run did not return within 20s of cancel")
		}
	}
	t.Cleanup(stop)
	return srv, stop
}

func adminConn(t testing.TB, srv *Server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func bundleOf(t testing.TB, conn *grpc.ClientConn) *x509bundle.Bundle {
	t.Helper()
	resp, err := adminv1.NewBundleServiceClient(conn).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	var certs []*x509.Certificate
	for _, a := range resp.GetBundle().GetX509Authorities() {
		c, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(td, certs)
}

func agentConn(t testing.TB, srv *Server, tlsCfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestServer_StateSurvivesARestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := testConfig(t, dataDir, t.TempDir())
	srv, stop := start(t, cfg)
	admin := adminConn(t, srv)
	ctx := context.Background()

	tok, err := adminv1.NewJoinTokenServiceClient(admin).GenerateToken(ctx, &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	bundle := bundleOf(t, admin)
	serverID := tlsconfig.AuthorizeID(agentid.Server(td))
	anon := agentConn(t, srv, tlsconfig.TLSClientConfig(bundle, serverID))
	key := newKey(t)
	sv := attest(t, agentv1.NewAgentServiceClient(anon), tok.GetToken(), key)
	if sv.ID.String() != tok.GetSpiffeId() {
		t.Fatalf("agent ID = %s, want %s", sv.ID, tok.GetSpiffeId())
	}
	created, err := adminv1.NewEntryServiceClient(admin).CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId: "spiffe://example.org/web", ParentId: sv.ID.String(), Selectors: []string{"unix:uid:1000"},
	}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	checkHealth(t, srv, anon, admin)
	stop()
	if _, err := os.Stat(cfg.AdminSocket); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind after shutdown: %v", err)
	}

	srv2, _ := start(t, cfg)
	admin2 := adminConn(t, srv2)
	bundle2 := bundleOf(t, admin2)
	if _, _, err := x509svid.Verify(sv.Certificates, bundle2); err != nil {
		t.Fatalf("agent SVID issued before the restart does not verify: %v", err)
	}
	node, err := adminv1.NewNodeServiceClient(admin2).GetNode(ctx, &adminv1.GetNodeRequest{SpiffeId: sv.ID.String()})
	if err != nil || node.GetNode().GetStatus() != typesv1.NodeStatus_NODE_STATUS_ACTIVE {
		t.Fatalf("node after restart = %v, %v", node, err)
	}
	// The agent carries on with its old SVID: Sync serves the entry.
	client := agentv1.NewAgentServiceClient(agentConn(t, srv2, tlsconfig.MTLSClientConfig(sv, bundle2, serverID)))
	sctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	stream, err := client.Sync(sctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("Sync after restart: %v", err)
	}
	var ids []string
	for _, e := range msg.GetUpserts() {
		ids = append(ids, e.GetId())
	}
	if diff := cmp.Diff([]string{created.GetEntry().GetId()}, ids); diff != "" {
		t.Errorf("entries after restart (-want +got):\n%s", diff)
	}
}

// checkHealth checks the gRPC health service and the HTTP endpoints.
func checkHealth(t *testing.T, srv *Server, agentAPI, adminAPI *grpc.ClientConn) {
	t.Helper()
	for name, conn := range map[string]*grpc.ClientConn{"agent API": agentAPI, "admin API": adminAPI} {
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s health = %v, %v; want SERVING", name, resp, err)
		}
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "nhid_agentapi_attestations_total{attestor=\"join_token\",outcome=\"success\"} 1",
	} {
		resp, err := http.Get("http://" + srv.HealthAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d, body lacks %q:\n%.2000s", path, resp.StatusCode, want, body)
		}
	}
}

func attest(t testing.TB, client agentv1.AgentServiceClient, token string, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := client.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	params := &agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(token), Csr: csr}
	if err := stream.Send(&agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: params}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	var raw []byte
	for _, c := range resp.GetResult().GetSvidChain() {
		raw = append(raw, c...)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := x509svid.ParseRaw(raw, pk)
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
